"""Tamper-evident message journal (TRACE-1..3): records, Merkle tree, signed checkpoints."""
