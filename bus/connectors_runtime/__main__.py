"""``python -m bus.connectors_runtime``: a scale-out connector worker."""

from bus.connectors_runtime.runtime import main

main()
