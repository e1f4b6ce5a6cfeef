"""The FastAPI gateway: admin, publish, subscribe, audit and lineage endpoints, and auth."""
