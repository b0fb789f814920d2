"""cohort-sdk: write Cohort plugins in Python (componentize-py).

A plugin is a componentize-py app for one world of the ``cohort:plugin``
WIT contract. It exports a class named after the world's interface
(``Importer``, ``Idp``, ``Rules``) and uses this package for what the Rust
SDK offers:

- ``Config`` / ``invalid`` / ``field``: configuration in and out;
- ``http.request(...)...fetch_json()``: outbound HTTP with the status mapping
  of the Rust SDK, ``http.next_link`` for Link pagination;
- ``log.info(...)`` and friends, ``now_millis()``;
- ``PluginError`` and its subclasses, ``import_errors`` / ``connector_errors``
  to turn them into the world's error;
- ``user`` / ``device`` / ``attribute`` / ``value``: records from plain values;
- ``cohort_sdk.idp`` and ``cohort_sdk.rules`` for connectors and evaluators;
- ``cohort_sdk.testing`` (tests only): bindings in plain CPython, ``FakeHost``.

The SDK reaches the generated ``wit_world`` bindings only at call time, see
``cohort_sdk._wit``.
"""

from . import encoding, http, idp, log, records, rules
from .config import Config, field, invalid, missing
from .errors import (
    BadResponse,
    DecodeError,
    FetchError,
    HttpFailed,
    PluginError,
    RateLimited,
    Unauthorized,
    UnexpectedStatus,
    connector_error,
    connector_errors,
    import_error,
    import_errors,
)
from .host import now_millis
from .http import next_link, request
from .records import Timestamp, attribute, device, user, value

#: This package's version. Major.minor is the ``cohort:plugin`` version it builds against.
__version__ = "0.1.0"

#: The ``cohort:plugin`` WIT version this SDK was written for.
WIT_VERSION = "0.1.0"

__all__ = [
    "BadResponse",
    "Config",
    "DecodeError",
    "FetchError",
    "HttpFailed",
    "PluginError",
    "RateLimited",
    "Timestamp",
    "Unauthorized",
    "UnexpectedStatus",
    "WIT_VERSION",
    "attribute",
    "connector_error",
    "connector_errors",
    "device",
    "encoding",
    "field",
    "http",
    "idp",
    "import_error",
    "import_errors",
    "invalid",
    "log",
    "missing",
    "next_link",
    "now_millis",
    "records",
    "request",
    "rules",
    "user",
    "value",
]
