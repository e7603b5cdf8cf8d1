"""qr-oidc's provider, in layers: ``settings``, ``security``, ``seal`` and ``audit`` at the base;
``storage`` (models, database, migrations, the ticket store, counters, change notices) above them;
``web`` (the Flask app factory, the event path, routes by family, pages) above the grants and
keys; ``runtime`` (server, CLI, maintenance) on top. docs/architecture.md draws them."""
