"""Connectors admins register: sources that pull an agency's system into its catalogued dataset (R13), and
sinks that push a grant's delivered view into the grantee's own registered system (R8).

One kind per module, all on the base classes of ``connectors.base``; ``connectors.registry`` maps kind
names to classes. The bus side (publishing, reading deliveries, positions, retries, dead letters,
status) lives in ``bus.connectors_runtime``.
"""
