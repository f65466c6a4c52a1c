"""Peer certificate revocation (TLS-4): CRLs, learned operator certificates, a fingerprint deny-list.

Postfix cannot check CRLs and the milter only sees a peer's CN, so revocation works from what can
be known ahead of time: the certificates the listed operators serve (learned by a STARTTLS probe, or
seeded), checked against verified CRLs; the revoked ones become a `check_ccert_access` map keyed by
SHA-256 certificate fingerprints (never public-key fingerprints: a reissue with the same key passes).
A revoked certificate that was never learned cannot be caught this way (docs/revocation.md).
"""
