"""Structured logging through the host.

    from cohort_sdk import log
    log.info("fetched page", records=12, problems=0)

Keyword arguments become the line's structured fields (values are passed
through ``str``). The host caps the bytes one call may log; past the cap
lines are dropped, never an error. Never log secrets.
"""

from . import host as _host


def log(level, message, **fields):
    """Log at ``level`` (``"trace"``, ``"debug"``, ``"info"``, ``"warn"``, ``"error"``)."""
    _host.log(level, message, list(fields.items()))


def trace(message, **fields):
    """Log at ``trace``."""
    _host.log("trace", message, list(fields.items()))


def debug(message, **fields):
    """Log at ``debug``."""
    _host.log("debug", message, list(fields.items()))


def info(message, **fields):
    """Log at ``info``."""
    _host.log("info", message, list(fields.items()))


def warn(message, **fields):
    """Log at ``warn``."""
    _host.log("warn", message, list(fields.items()))


def error(message, **fields):
    """Log at ``error``."""
    _host.log("error", message, list(fields.items()))
