"""A request as the event path reads it (provider/web/events.py): its path, headers, peer and
body, whose parameters are parsed once, by provider/web/body.py's rules, when first asked."""

from __future__ import annotations

import time

from authlib.oauth2 import OAuth2Error

from qr_oidc.provider.web.body import parse_body


class Request:
    __slots__ = ("scope", "path", "headers", "body", "started", "ip", "agent", "_params")

    def __init__(self, scope, body: bytes, ip: str | None):
        self.scope, self.path, self.body, self.ip = scope, scope["path"], body, ip
        self._params = None
        self.headers = {}
        for name, value in scope["headers"]:
            # a repeated header is one value joined by commas, as WSGI servers give it
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            self.headers[key] = f"{self.headers[key]},{text}" if key in self.headers else text
        self.agent = self.headers.get("user-agent")
        self.started = time.perf_counter()

    @property
    def mimetype(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def params(self):
        """The body's parameters, read once (provider/web/body.py's rules); raises
        InvalidRequestError for a body that is not one, every time it is asked."""
        if self._params is None:
            try:
                self._params = parse_body(self.body, self.mimetype)
            except OAuth2Error as exc:
                self._params = exc
        if isinstance(self._params, Exception):
            raise self._params
        return self._params
