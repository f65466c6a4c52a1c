"""Certificate and CRL checker: the certificate/CRL series of the metric catalogue (docs/monitoring.md).

Run periodically (``python3 -m mssante.certcheck --config /etc/mssante/mssante.yml``): it reads the
certificates and CRLs named in the ``certcheck`` section, checks each CRL's signature against its CA and
its next update, and writes a Prometheus text file for node_exporter's textfile collector, or serves the
same page on its own loopback HTTP listener (``listen``).
"""
