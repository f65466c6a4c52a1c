"""Lab and test infrastructure: test PKI, lab orchestration (docs/lab.md, docs/test-pki.md)."""
