"""qr-oidc: an OpenID Connect provider whose signature feature is QR-code login.

Everything the distribution installs lives under this one name; the source folders map onto it
(pyproject.toml's ``package-dir``), from the bottom layer up:

- ``qr_oidc.provider`` (``provider/``): settings, secrets and the audit log at the base;
  ``storage`` (models, database, migrations, the ticket store, counters, change notices);
  ``web`` (the Flask app, the event path, routes by family, pages); ``runtime`` (server, CLI)
- ``qr_oidc.grants`` (``grants/``): the token core, the ticket state machine, one module per
  grant
- ``qr_oidc.keys`` (``keys/``): the key set, the JWKS and rotation

docs/architecture.md draws the layers; tests/test_layers.py keeps them.
"""
