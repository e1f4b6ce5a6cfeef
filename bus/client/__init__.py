"""The SDK agencies use: ``Publisher`` (signed Avro records to the bus), ``Subscriber`` (a grant's view)."""

from bus.client.publisher import Publisher, Rejection
from bus.client.subscriber import Delivery, Subscriber

__all__ = ["Delivery", "Publisher", "Rejection", "Subscriber"]
