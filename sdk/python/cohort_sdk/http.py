"""Outbound HTTP: a request builder and the status mapping of the Rust SDK.

    from cohort_sdk import http
    data, response = http.request("GET", url).bearer(token).fetch_json()
    next_url = http.next_link(response)
    if next_url is not None and not http.under(base_url, next_url):
        raise BadResponse("the next-page link leaves the configured API")

A link the source sends is the source's to choose: check that it stays
under the configured API before following it with the credentials attached.

``fetch_json`` and ``fetch_text`` raise a ``FetchError`` subclass:

- the host gave no response          -> ``HttpFailed(http_error)``
- 429 or 503                          -> ``RateLimited(seconds)``, from
  ``Retry-After`` in seconds, 30 when absent or unreadable
- 401 or 403                          -> ``Unauthorized(status)``
- any other non-2xx                   -> ``UnexpectedStatus(status, body)``,
  the first 200 bytes of the body
- a 2xx body that is not JSON (UTF-8) -> ``DecodeError(message)``

See ``cohort_sdk.errors`` for turning them into the world's error.
Only hosts in the manifest's ``allowed_hosts`` are reachable; any other is
``HttpFailed(HttpError_HostNotAllowed(...))``.
"""

import json as _json
import re

from . import _wit, encoding
from . import host as _host
from .errors import DecodeError, HttpFailed, RateLimited, Unauthorized, UnexpectedStatus

_METHODS = {
    "GET": "Method_Get",
    "POST": "Method_Post",
    "PUT": "Method_Put",
    "PATCH": "Method_Patch",
    "DELETE": "Method_Delete",
    "HEAD": "Method_Head",
}


def method_of(method):
    """The host's ``Method`` variant for a name such as ``"GET"``; other
    names become ``Method_Other``. A ``Method`` value is returned as is."""
    if not isinstance(method, str):
        return method
    host = _wit.host()
    cls = _METHODS.get(method.upper())
    return getattr(host, cls)() if cls else host.Method_Other(method)


def method_name(method):
    """``"GET"``, ``"POST"``... for a ``Method`` variant (or a name)."""
    if isinstance(method, str):
        return method.upper()
    for name, cls in _METHODS.items():
        if type(method).__name__ == cls:
            return name
    return str(getattr(method, "value", "")).upper()


class Request:
    """A request being built. Each method adds to it and returns it."""

    def __init__(self, method, url):
        self.method = method_of(method)
        self.url = url
        self.headers = []
        self.body = b""
        self.timeout_ms = None

    def header(self, name, value):
        """Add a header."""
        self.headers.append((name, value))
        return self

    def bearer(self, token):
        """Add ``Authorization: Bearer <token>``."""
        return self.header("authorization", "Bearer " + token)

    def basic(self, user, password):
        """Add ``Authorization: Basic`` with ``user:password`` in base64."""
        return self.header("authorization", "Basic " + encoding.base64("%s:%s" % (user, password)))

    def json(self, body):
        """Set a JSON body (compact, UTF-8) and its content type. A value
        ``json`` cannot encode raises ``DecodeError``."""
        try:
            self.body = _json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as e:
            raise DecodeError(str(e)) from None
        return self.header("content-type", "application/json")

    def form(self, pairs):
        """Set an ``application/x-www-form-urlencoded`` body from ``pairs``
        (a list of ``(name, value)`` or a dict), as OAuth token endpoints take."""
        self.body = encoding.form_urlencoded(pairs).encode()
        return self.header("content-type", "application/x-www-form-urlencoded")

    def timeout(self, millis):
        """A shorter timeout than the host's default (it never allows a longer one)."""
        self.timeout_ms = millis
        return self

    def build(self):
        """The ``wit_world.imports.host.Request`` to send."""
        return _wit.host().Request(
            method=self.method,
            url=self.url,
            headers=list(self.headers),
            body=bytes(self.body),
            timeout_ms=self.timeout_ms,
        )

    def send(self):
        """Send it and return the ``Response``, whatever its status. Raises
        ``HttpFailed`` when there is no response."""
        try:
            return _host.send(self.build())
        except _wit.Err() as e:
            raise HttpFailed(e.value) from None

    def fetch(self):
        """Send it and return a 2xx ``Response``; other statuses raise as
        described in the module's doc."""
        response = self.send()
        check_status(response)
        return response

    def fetch_json(self):
        """Send it with ``Accept: application/json`` and return
        ``(decoded JSON, response)`` for a 2xx answer."""
        response = self.header("accept", "application/json").fetch()
        try:
            return _json.loads(bytes(response.body).decode("utf-8")), response
        except (UnicodeDecodeError, ValueError) as e:
            raise DecodeError(str(e)) from None

    def fetch_text(self):
        """Send it and return ``(body as text, response)`` for a 2xx answer
        (CSV exports and the like)."""
        response = self.fetch()
        try:
            return bytes(response.body).decode("utf-8"), response
        except UnicodeDecodeError as e:
            raise DecodeError("the body is not UTF-8: %s" % e) from None


def request(method, url):
    """Start a request: ``request("GET", "https://api.example.com/v1/people")``."""
    return Request(method, url)


def header(response, name):
    """The first header of ``response`` named ``name`` (case-insensitive)."""
    name = name.lower()
    for key, value in response.headers:
        if key.lower() == name:
            return value
    return None


_RETRY_AFTER = re.compile(r"\+?[0-9]+")


def check_status(response):
    """Raise the ``FetchError`` for a non-2xx ``response``; nothing for 2xx."""
    status = response.status
    if 200 <= status <= 299:
        return
    if status in (401, 403):
        raise Unauthorized(status)
    if status in (429, 503):
        seconds = 30
        value = (header(response, "retry-after") or "").strip()
        if _RETRY_AFTER.fullmatch(value) and int(value) <= 0xFFFFFFFF:
            seconds = int(value)
        raise RateLimited(seconds)
    body = bytes(response.body[:200]).decode("utf-8", "replace")
    raise UnexpectedStatus(status, body)


def under(base_url, url):
    """Whether ``url`` is ``base_url`` itself or a path below it (same
    scheme, host and port): where credentials for that API may be sent."""
    base = base_url.rstrip("/")
    return url == base or url.startswith(base + "/") or url.startswith(base + "?")


def next_link(response):
    """The ``rel="next"`` target of an RFC 8288 ``Link`` header, the
    pagination style of Okta, GitHub and many HR APIs; ``None`` without one."""
    link = header(response, "link")
    if link is None:
        return None
    for part in link.split(","):
        target, sep, params = part.partition(";")
        if not sep:
            continue
        is_next = any(
            p.strip().lower() == 'rel="next"' or p.strip() == "rel=next" for p in params.split(";")
        )
        target = target.strip()
        if not (target.startswith("<") and target.endswith(">")):
            continue
        if is_next:
            return target[1:-1]
    return None
