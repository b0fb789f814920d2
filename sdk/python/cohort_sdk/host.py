"""The plugin's only ways out of the sandbox: logging, the clock and HTTP.

Thin wrappers over ``wit_world.imports.host``. In a component they call the
Cohort host; in a unit test they call the installed
``cohort_sdk.testing.FakeHost``. Use ``cohort_sdk.log`` and
``cohort_sdk.http`` rather than these in plugin code.
"""

from . import _wit


def level_of(name):
    """The host's ``Level`` for ``name`` (``"trace"``, ``"debug"``, ``"info"``,
    ``"warn"``, ``"error"``), or ``name`` itself when it is a ``Level``."""
    if isinstance(name, str):
        return _wit.host().Level[name.upper()]
    return name


def log(level, message, fields=()):
    """Write a log line. ``fields`` is a list of ``(name, value)`` string pairs."""
    _wit.host().log(level_of(level), message, [(str(k), str(v)) for k, v in fields])


def now_millis():
    """Wall-clock time in milliseconds since the Unix epoch (UTC)."""
    return _wit.host().now_millis()


def send(request):
    """Send one ``wit_world.imports.host.Request``. Returns the ``Response``;
    raises ``componentize_py_types.Err(HttpError)`` when there is none
    (``cohort_sdk.http`` turns that into ``HttpFailed``)."""
    return _wit.host().send_http(request)
