"""Encodings for the wire, the same as the Rust SDK's ``encoding`` module."""

import base64 as _b64
from urllib.parse import quote as _quote


def url_component(s):
    """Percent-encode ``s`` as one URL component (a query value, a path
    segment or a form field): everything but RFC 3986's unreserved characters
    (``A-Z a-z 0-9 - . _ ~``), UTF-8 first, upper-case hex; a space is ``%20``.
    """
    return _quote(s, safe="-._~")


def form_urlencoded(pairs):
    """An ``application/x-www-form-urlencoded`` body from ``pairs`` (a list
    of ``(name, value)`` or a dict), in order, each side encoded with
    ``url_component``."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return "&".join(url_component(str(k)) + "=" + url_component(str(v)) for k, v in items)


def base64(data):
    """Standard base64 with padding (RFC 4648 section 4)."""
    if isinstance(data, str):
        data = data.encode()
    return _b64.b64encode(data).decode("ascii")


def base64url(data):
    """Base64url without padding (RFC 4648 section 5), as JWS parts are written."""
    if isinstance(data, str):
        data = data.encode()
    return _b64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
