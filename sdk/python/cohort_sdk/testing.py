"""Run a plugin's Python code in plain CPython, with the host replaced by a fake.

Two steps, at the top of a test module:

    from cohort_sdk.testing import FakeHost, config_entries, load_bindings
    load_bindings("directory-importer", wit="wit")   # before importing app
    import app

``load_bindings`` runs ``componentize-py -d <wit> -w <world> bindings`` into a
cache folder and puts it first on ``sys.path``, so ``wit_world`` and
``componentize_py_types`` import as they do inside the component. Those
bindings are stubs: their host functions raise. ``FakeHost`` replaces them:

    with FakeHost().respond("https://hr.example.com/api/people",
                            json={"people": []}) as fake:
        page = app.Importer().fetch_page(config_entries({...}), None)
    assert fake.requests[0].url == "https://hr.example.com/api/people"

A request for a URL with no recorded response fails with
``HttpError_HostNotAllowed``, the error the real host gives for a host
missing from ``allowed_hosts``. A host call with no fake installed raises
``RuntimeError`` with a hint.

This module is for tests only: a plugin never imports it.
"""

import dataclasses
import hashlib
import json as _json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import _wit
from .http import method_name

#: Every world at once (componentize-py merges worlds given with several
#: ``-w``): the SDK's own tests use it to check importer, connector and
#: evaluator helpers in one process.
ALL_WORLDS = ("directory-importer", "idp-connector", "rule-evaluator")

_loaded = None


def find_wit(start=None):
    """The WIT package folder: ``wit/`` (holding ``worlds.wit``) in ``start``
    (default: the current folder) or a parent, or the newest
    ``wit/cohort-plugin@*/`` there. ``None`` when there is none."""
    here = Path(start or os.getcwd()).resolve()
    for folder in [here, *here.parents]:
        wit = folder / "wit"
        if (wit / "worlds.wit").is_file():
            return wit
        versions = sorted(p for p in wit.glob("cohort-plugin@*") if (p / "worlds.wit").is_file())
        if versions:
            return versions[-1]
    return None


def _componentize_py():
    exe = shutil.which("componentize-py")
    if exe is None:
        raise RuntimeError(
            "componentize-py is not on PATH; `pip install componentize-py==0.25.1` "
            "(it also builds the component)"
        )
    return exe


def _user_cache():
    """The per-user cache: never a shared temporary directory, where another
    user could plant a wit_world module that the tests would then import."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cohort" / "python-bindings"


def _private_dir(path):
    """Create `path` for this user only, and refuse one someone else owns or
    others may write to."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise RuntimeError("%s belongs to another user; not loading bindings from it" % path)
    if info.st_mode & 0o022:
        raise RuntimeError("%s is writable by others; not loading bindings from it" % path)


def load_bindings(world=None, wit=None, cache=None):
    """Generate (or reuse) stub bindings for ``world`` and put them on ``sys.path``.

    ``world``: ``"directory-importer"``, ``"idp-connector"``,
    ``"rule-evaluator"``, or a list of them (merged); ``None`` is ``ALL_WORLDS``.
    ``wit``: the WIT package folder; default ``find_wit()``.
    ``cache``: where bindings are kept, one folder per WIT content and world;
    default ``$COHORT_SDK_BINDINGS`` or ``<tmp>/cohort-sdk-bindings``.

    Idempotent. A process holds one ``wit_world``: asking for other worlds
    after some were loaded raises ``RuntimeError``. Returns the bindings folder.
    """
    global _loaded
    worlds = [world] if isinstance(world, str) else list(world or ALL_WORLDS)
    name = "+".join(worlds)
    wit = Path(wit) if wit is not None else find_wit()
    if wit is None or not (wit / "worlds.wit").is_file():
        raise RuntimeError("no WIT package (a folder with worlds.wit) at %s" % wit)
    wit = wit.resolve()
    exe = _componentize_py()

    digest = hashlib.sha256(name.encode())
    for path in sorted(wit.rglob("*.wit")):
        digest.update(str(path.relative_to(wit)).encode() + b"\0" + path.read_bytes())
    digest.update(subprocess.run([exe, "--version"], capture_output=True).stdout)
    root = Path(cache or os.environ.get("COHORT_SDK_BINDINGS") or _user_cache())
    _private_dir(root)
    out = root / ("%s-%s" % (name, digest.hexdigest()[:16]))

    if _loaded is not None:
        if _loaded == out:
            return out
        raise RuntimeError(
            "bindings %s are loaded already; one test process holds one wit_world" % _loaded.name
        )
    if "wit_world" in sys.modules:
        raise RuntimeError("wit_world was imported before load_bindings")

    if not (out / ".complete").is_file():
        work = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=root))
        args = [exe, "-d", str(wit)]
        for w in worlds:
            args += ["-w", w]
        done = subprocess.run(
            args + ["bindings", str(work / "bindings")], capture_output=True, text=True
        )
        if done.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise RuntimeError("componentize-py bindings failed:\n" + done.stderr)
        (work / "bindings" / ".complete").write_text("")
        try:
            os.replace(work / "bindings", out)
        except OSError:
            if not (out / ".complete").is_file():  # not another process winning the race
                raise
        shutil.rmtree(work, ignore_errors=True)

    sys.path.insert(0, str(out))
    host = _wit.host()
    for function in ("log", "now_millis", "send_http"):
        setattr(host, function, _no_fake(function))
    _loaded = out
    return out


def _no_fake(name):
    def call(*args, **kwargs):
        raise RuntimeError(
            "the Cohort host function %s was called with no FakeHost installed; "
            "wrap the call in `with FakeHost(): ...`" % name
        )

    return call


@dataclasses.dataclass
class LogLine:
    """A line a plugin logged during a test."""

    level: str
    """``"trace"``, ``"debug"``, ``"info"``, ``"warn"`` or ``"error"``."""
    message: str
    fields: dict
    """The structured fields, by name."""


_HTTP_ERRORS = {
    "host-not-allowed": "HttpError_HostNotAllowed",
    "invalid-url": "HttpError_InvalidUrl",
    "timeout": "HttpError_Timeout",
    "response-too-large": "HttpError_ResponseTooLarge",
    "connection": "HttpError_Connection",
    "invalid-request": "HttpError_InvalidRequest",
    "other": "HttpError_Other",
}


def http_error(kind, value=None):
    """A host ``HttpError`` variant by its WIT name: ``http_error("timeout")``,
    ``http_error("connection", "refused")``."""
    cls = getattr(_wit.host(), _HTTP_ERRORS[kind.replace("_", "-")])
    return cls() if kind == "timeout" else cls(value if value is not None else "")


class FakeHost:
    """A stand-in for the Cohort host. Record responses, then install it
    (``with FakeHost()... as fake:``, or ``install()`` / ``uninstall()``).

    For one (method, URL) the entry recorded last wins; ``method=None``
    answers any method. What the plugin did is in ``requests`` (the host
    ``Request`` values, in order) and ``logs`` (``LogLine``)."""

    def __init__(self):
        self.now = 0
        self.requests = []
        self.logs = []
        self._responses = []
        self._saved = None

    def at_millis(self, now_millis):
        """Set the wall clock the plugin sees (``now_millis()``)."""
        self.now = now_millis
        return self

    def respond(self, url, status=200, *, json=None, text=None, body=None, headers=None, method=None):
        """Answer requests for exactly ``url`` (with ``method``, or any) with
        ``status`` and one of: ``json`` (encoded, with ``content-type:
        application/json``), ``text`` (UTF-8), ``body`` (bytes); none is an
        empty body. ``headers`` (a dict or pairs) are added, names lowercased."""
        if json is not None:
            data = _json.dumps(json).encode()
            default = [("content-type", "application/json")]
        elif text is not None:
            data = text.encode("utf-8")
            default = [("content-type", "text/plain; charset=utf-8")]
        else:
            data = bytes(body or b"")
            default = []
        extra = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
        names = {k.lower() for k, _ in extra}
        all_headers = [h for h in default if h[0] not in names] + [(k.lower(), v) for k, v in extra]
        response = _wit.host().Response(status=status, headers=all_headers, body=data)
        self._responses.append((method and method.upper(), url, response))
        return self

    def fail(self, url, error, value=None, *, method=None):
        """Make requests for ``url`` fail with a host ``HttpError``: a variant
        value, or its WIT name and payload (``fail(url, "timeout")``,
        ``fail(url, "connection", "refused")``)."""
        if isinstance(error, str):
            error = http_error(error, value)
        self._responses.append((method and method.upper(), url, error))
        return self

    # The host functions, as the plugin sees them.

    def send_http(self, request):
        self.requests.append(request)
        name = method_name(request.method)
        for method, url, answer in reversed(self._responses):
            if url == request.url and (method is None or method == name):
                if isinstance(answer, _wit.host().Response):
                    return dataclasses.replace(answer, headers=list(answer.headers))
                raise _wit.err(answer)
        raise _wit.err(_wit.host().HttpError_HostNotAllowed("no fake response for " + request.url))

    def log(self, level, message, fields):
        self.logs.append(LogLine(level=level.name.lower(), message=message, fields=dict(fields)))

    def now_millis(self):
        return self.now

    # Installation.

    def install(self):
        """Make this fake the host until ``uninstall()``. Returns it."""
        host = _wit.host()
        self._saved = {name: getattr(host, name) for name in ("log", "now_millis", "send_http")}
        host.log = self.log
        host.now_millis = self.now_millis
        host.send_http = self.send_http
        return self

    def uninstall(self):
        """Put back what was there before ``install()``."""
        if self._saved is not None:
            host = _wit.host()
            for name, fn in self._saved.items():
                setattr(host, name, fn)
            self._saved = None

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.uninstall()
        return False

    def request_headers(self, i=-1):
        """Request ``i``'s headers as a dict with lowercase names (the last
        request by default)."""
        return {k.lower(): v for k, v in self.requests[i].headers}


def config_entries(values, secrets=()):
    """A ``list<config-entry>`` from a dict, as the case files write it:
    ``str`` -> text (or secret when its name is in ``secrets``), ``bool`` ->
    boolean, ``int`` / ``float`` -> number, ``list`` -> text-list."""
    types = _wit.types()
    out = []
    for name, v in values.items():
        if isinstance(v, str):
            value = types.ConfigValue_Secret(v) if name in secrets else types.ConfigValue_Text(v)
        elif isinstance(v, bool):
            value = types.ConfigValue_Boolean(v)
        elif isinstance(v, (int, float)):
            value = types.ConfigValue_Number(float(v))
        elif isinstance(v, (list, tuple)):
            value = types.ConfigValue_TextList([str(i) for i in v])
        else:
            raise TypeError("%r cannot be a config value" % (v,))
        out.append(types.ConfigEntry(name=name, value=value))
    return out
