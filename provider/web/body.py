"""Request bodies of the JSON endpoints: read strictly, once, within a size limit.

A body is a form (``application/x-www-form-urlencoded``) or a JSON object whose values are
strings (numbers are taken as their text). Anything else is refused with ``invalid_request``
rather than guessed at: a body the server cannot read is never an empty form. Each parameter
appears at most once (RFC 6749 §3.1, §3.2), text is strict UTF-8, and a body larger than
``MAX_BODY`` is refused with 413 also when it arrives chunked, without reading past the limit.
"""

from __future__ import annotations

import io
import json
import re
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import InvalidRequestError
from flask import g
from werkzeug.datastructures import MultiDict

from qr_oidc.provider.web.headers import security_headers

MAX_BODY = 64 * 1024


def body_params(request) -> MultiDict:
    """The request's body parameters; raises InvalidRequestError for a body that is not one."""
    cached = g.get("qr_oidc_body")
    if cached is not None:
        return cached
    params = parse_body(request.get_data(cache=True), request.mimetype)
    g.qr_oidc_body = params
    return params


def parse_body(raw: bytes, mimetype: str) -> MultiDict:
    """The parameters of a body of ``mimetype`` (lowercase, without parameters), by the rules
    above: Flask's routes and the event path (provider/web/event_request.py) both read bodies
    here."""
    if not raw:
        return MultiDict()
    if mimetype == "application/x-www-form-urlencoded":
        return _form(raw)
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return _json(raw)
    raise InvalidRequestError(
        "Send the parameters as application/x-www-form-urlencoded or application/json.")


def _form(raw: bytes) -> MultiDict:
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("The form is not valid UTF-8.") from None
    return _unique(pairs)


def _json(raw: bytes) -> MultiDict:
    try:
        parsed = json.loads(raw.decode("utf-8"), object_pairs_hook=_Pairs)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequestError("The body is not valid JSON.") from None
    if not isinstance(parsed, _Pairs):
        raise InvalidRequestError("The body must be a JSON object.")
    pairs = []
    for key, value in parsed:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InvalidRequestError(f"'{_shown(key)}' must be a string.")
        pairs.append((key, value if isinstance(value, str) else str(value)))
    return _unique(pairs)


class _Pairs(list):
    """A JSON object kept as its (key, value) pairs, so a repeated key is seen, not merged."""

    def __init__(self, pairs):
        super().__init__(pairs)


def _unique(pairs) -> MultiDict:
    seen = set()
    for key, value in pairs:
        if key in seen:
            raise InvalidRequestError(f"'{_shown(key)}' appears more than once.")
        seen.add(key)
        try:
            key.encode("utf-8"), value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON escape
            raise InvalidRequestError(f"'{_shown(key)}' is not valid text.") from None
        if "\x00" in key or "\x00" in value:  # no protocol value holds NUL; PostgreSQL text can't
            raise InvalidRequestError(f"'{_shown(key)}' contains a NUL character.")
    return MultiDict(pairs)


_UNSHOWABLE = re.compile(r'[^\x20\x21\x23-\x5B\x5D-\x7E]')


def _shown(name: str) -> str:
    """A parameter name made safe to quote in ``error_description``, which RFC 6749 §5.2 limits
    to printable ASCII without ``"`` and ``\\`` (Authlib refuses anything else with a 500)."""
    return _UNSHOWABLE.sub("?", name)[:40]


TOO_LARGE = b'{"error": "invalid_request", "error_description": "Body too large."}'


class BodyLimit:
    """WSGI middleware: refuse bodies over ``MAX_BODY`` before the app reads them, chunked ones
    included (they carry no Content-Length for Flask's own limit to check)."""

    def __init__(self, app, limit: int = MAX_BODY, secure: bool = False):
        self.app, self.limit = app, limit
        self.refusal_headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                                ("Connection", "close"),
                                *security_headers("application/json", secure)]

    def __call__(self, environ, start_response):
        length = environ.get("CONTENT_LENGTH")
        if length:
            try:
                too_big = int(length) > self.limit
            except ValueError:
                too_big = False
            if too_big:
                return self._refuse(start_response, self.refusal_headers)
        elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            data = environ["wsgi.input"].read(self.limit + 1)
            if len(data) > self.limit:
                return self._refuse(start_response, self.refusal_headers)
            environ["wsgi.input"] = io.BytesIO(data)
            environ["CONTENT_LENGTH"] = str(len(data))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ["wsgi.input_terminated"] = False
        return self.app(environ, start_response)

    @staticmethod
    def _refuse(start_response, headers):
        start_response("413 Content Too Large",
                       [("Content-Length", str(len(TOO_LARGE))), *headers])
        return [TOO_LARGE]
