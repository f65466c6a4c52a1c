"""OAuth 2 helpers for the Dovecot side: a local RFC 7662 introspection server (lab and tests)."""
