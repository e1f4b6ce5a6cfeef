"""Tracing, lineage and the hash-chained audit log: what auditors read."""
