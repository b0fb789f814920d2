"""Failures the SDK raises, and their conversion into the worlds' errors.

An exported function reports a failure by raising
``componentize_py_types.Err(<the WIT error variant>)``; any other exception
is a trap (``plugin_trap``, counted against the plugin's health). The SDK's
helpers raise the Python exceptions below, which know the WIT variant they
stand for:

    try:
        data, _ = http.request("GET", url).bearer(token).fetch_json()
    except PluginError as e:
        raise Err(e.import_error())       # or e.connector_error() in an IdP connector

or, shorter, decorate the exported method and let the decorator do it:

    @import_errors
    def fetch_page(self, config, cursor): ...

The mapping is the Rust SDK's ``From<FetchError>``:

| exception            | import-error                      | connector-error         |
|----------------------|-----------------------------------|-------------------------|
| HttpFailed(e)        | http(e)                           | http(e)                 |
| RateLimited(s)       | rate-limited(s)                   | bad-response(str(exc))  |
| Unauthorized(status) | unauthorized("the source answered <status>") | bad-response(str(exc)) |
| UnexpectedStatus     | bad-response("status <s>: <body>") | bad-response(str(exc)) |
| DecodeError(m)       | bad-response(m)                   | bad-response(str(exc))  |
| BadResponse(m)       | bad-response(m)                   | bad-response(m)         |
| Err(config-error)    | config(config-error)              | config(config-error)    |
"""

import functools

from . import _wit


class PluginError(Exception):
    """Base of the SDK's failures. Each knows its WIT error variant."""

    def import_error(self):
        """This failure as an importer ``import-error`` variant."""
        return _wit.export("importer").ImportError_Other(str(self))

    def connector_error(self):
        """This failure as an IdP ``connector-error`` variant."""
        return _wit.export("idp").ConnectorError_BadResponse(str(self))


class BadResponse(PluginError):
    """The source answered with something the plugin cannot read (a page
    without its list, a next link outside the API...)."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def import_error(self):
        return _wit.export("importer").ImportError_BadResponse(self.message)

    def connector_error(self):
        return _wit.export("idp").ConnectorError_BadResponse(self.message)


class FetchError(PluginError):
    """A JSON-over-HTTP helper failed: no response, a non-2xx status, or a
    body that could not be decoded. Always one of the subclasses below."""


class HttpFailed(FetchError):
    """The request produced no response. ``error`` is the host's
    ``HttpError`` variant (``HttpError_HostNotAllowed``, ``HttpError_Timeout``...)."""

    def __init__(self, error):
        super().__init__("http request failed: %r" % (error,))
        self.error = error

    def import_error(self):
        return _wit.export("importer").ImportError_Http(self.error)

    def connector_error(self):
        return _wit.export("idp").ConnectorError_Http(self.error)


class RateLimited(FetchError):
    """The source answered 429 or 503. ``seconds`` is its ``Retry-After``
    (30 when absent or not a number of seconds)."""

    def __init__(self, seconds):
        super().__init__("rate limited; retry after %d s" % seconds)
        self.seconds = seconds

    def import_error(self):
        return _wit.export("importer").ImportError_RateLimited(self.seconds)


class Unauthorized(FetchError):
    """The source refused the credentials (401 or 403)."""

    def __init__(self, status):
        super().__init__("unauthorized (status %d)" % status)
        self.status = status

    def import_error(self):
        return _wit.export("importer").ImportError_Unauthorized(
            "the source answered %d" % self.status
        )


class UnexpectedStatus(FetchError):
    """Any other non-2xx status. ``body`` is up to 200 bytes of the body,
    decoded with replacement characters."""

    def __init__(self, status, body):
        super().__init__("unexpected status %d: %s" % (status, body))
        self.status = status
        self.body = body

    def import_error(self):
        return _wit.export("importer").ImportError_BadResponse(
            "status %d: %s" % (self.status, self.body)
        )


class DecodeError(FetchError):
    """The body was not what the plugin expected (not JSON, not UTF-8)."""

    def __init__(self, message):
        super().__init__("unreadable response: %s" % message)
        self.message = message

    def import_error(self):
        return _wit.export("importer").ImportError_BadResponse(self.message)


def _config_error(value):
    types = _wit.types()
    return isinstance(
        value, (types.ConfigError_Missing, types.ConfigError_Invalid, types.ConfigError_Other)
    )


def _convert(exc, method, wrap_config):
    if isinstance(exc, PluginError):
        return getattr(exc, method)()
    if isinstance(exc, _wit.Err()):
        if _config_error(exc.value):
            return wrap_config(exc.value)
        return exc.value
    raise TypeError("cannot convert %r into a WIT error" % (exc,))


def import_error(exc):
    """The ``import-error`` variant for ``exc``: a ``PluginError``, or an
    ``Err`` carrying a config-error (``Config.require_text``, ``invalid``)
    or already an import-error. Raise it with ``raise Err(import_error(e))``."""
    return _convert(exc, "import_error", lambda v: _wit.export("importer").ImportError_Config(v))


def connector_error(exc):
    """The ``connector-error`` variant for ``exc``, like ``import_error``."""
    return _convert(exc, "connector_error", lambda v: _wit.export("idp").ConnectorError_Config(v))


def _decorator(convert):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            Err = _wit.Err()
            try:
                return fn(*args, **kwargs)
            except PluginError as e:
                raise Err(convert(e)) from None
            except Err as e:
                if _config_error(e.value):
                    raise Err(convert(e)) from None
                raise

        return wrapper

    return decorate


import_errors = _decorator(import_error)
import_errors.__doc__ = """Decorate an importer's ``fetch_page``: the SDK's
failures and config errors raised inside become ``Err(import-error)``.
Other exceptions pass through unchanged."""

connector_errors = _decorator(connector_error)
connector_errors.__doc__ = """Decorate an IdP connector's ``endpoints``,
``map_claims`` or ``list_users``: like ``import_errors``, into
``Err(connector-error)``."""
