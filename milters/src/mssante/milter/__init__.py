"""The MSSanté milter: trust-space policy, header tagging, journal and metrics in one process.

The pure core (:mod:`.policy`, :mod:`.engine`) never imports pymilter; :mod:`.adapter` does.
"""
