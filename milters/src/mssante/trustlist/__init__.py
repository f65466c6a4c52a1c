"""The MSSanté trust list ("liste blanche"): fetch, verify, compile and serve (TRUST-1..5, TRUST-8).

Readers use :mod:`mssante.trustlist.index`; the ``mssante-trustlist`` command lives in
:mod:`mssante.trustlist.cli`.
"""
