"""The connector runtime: runs the registered connectors, inside ``databus up`` or as a scale-out worker.

A supervisor thread watches the ``connectors`` table (every ``reconcile_interval``) and runs each connector
whose desired state is ``running`` in its own thread. Several runtimes may watch one store: a Redis lease
per connector (renewed by its holder, released on stop, expiring after ``lease_seconds`` if the holder
dies) makes sure each connector runs in exactly one of them.

Per batch a connector thread: reads from the external system (source) or the grant's delivered view
(sink); publishes through the SDK's authenticated path or writes to the destination; sends the records
that cannot go anywhere to ``<prefix>bus.deadletter`` with the reason; and only then saves the position
and status in one store update. A crash therefore repeats at most one batch and loses nothing. Failures
of the external system are retried with exponential backoff and full jitter; when they keep failing (or
cannot succeed at all) the connector stops with state ``failed`` and its last error, until an admin
starts it again.
"""

from bus.connectors_runtime.common import backoff
from bus.connectors_runtime.runtime import ConnectorRuntime, main, make_worker

__all__ = ["ConnectorRuntime", "backoff", "main", "make_worker"]
