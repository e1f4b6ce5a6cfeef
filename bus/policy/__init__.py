"""Pure policy code: decisions, projection, masking, pseudonyms, fingerprints, egress. No I/O here."""
