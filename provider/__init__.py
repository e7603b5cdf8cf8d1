"""qr-oidc's provider: app factory, configuration, storage, HTTP layer, pages and CLI."""

from .app import create_app

__all__ = ["create_app"]
