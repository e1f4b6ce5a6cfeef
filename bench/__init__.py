"""Benchmarks that keep the bus honest: every figure is a ratio against raw Kafka measured in the same run."""
