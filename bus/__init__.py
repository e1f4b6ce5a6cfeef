"""The data exchange bus: catalogued datasets over Kafka, guarded by a sharing gateway."""

__version__ = "0.1.0"
