"""The data catalogue: datasets, schema versions, sharing attributes, review workflow, overlap (R1-R6, R9)."""
