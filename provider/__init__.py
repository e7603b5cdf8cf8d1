"""qr-oidc's provider: app factory, configuration, storage, HTTP layer, pages and CLI."""

__all__ = ["create_app"]


def __getattr__(name: str):
    # loaded on first use, so that ``import keys`` (whose key set reads provider.models) does not
    # import the app, which imports ``keys`` again, half made
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
