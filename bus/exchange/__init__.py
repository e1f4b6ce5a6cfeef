"""Kafka side of the bus: topic names, headers, record signing, the validator and the router."""
