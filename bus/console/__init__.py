"""The web console (issue 15): static pages and ES modules served by the gateway at ``/console``.

It talks to the bus only through the public HTTP API with the caller's own key (kept in
``sessionStorage``); what a role may see is decided by the API. ``routes.router`` serves the console and
the documents the bus's URIs point at (``bus.console.docs``). Vendored JavaScript: ``static/vendor/``.
"""
