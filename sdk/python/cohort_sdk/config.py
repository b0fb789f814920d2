"""Typed access to the configuration passed to a call.

    config = Config(entries)                 # the list<config-entry> a call receives
    base_url = config.require_text("base_url")
    if "?" in base_url:
        raise Err(invalid("base_url", "give the base URL without a query"))

The host has already checked the values against the manifest (required
fields present, kinds right), so the accessors only fail on values the
plugin itself refuses.
"""

from . import _wit


class Config:
    """The configuration entries of one call, by field name."""

    def __init__(self, entries=()):
        if isinstance(entries, Config):
            entries = entries.entries
        self.entries = list(entries)

    def _get(self, name):
        for entry in self.entries:
            if entry.name == name:
                return entry.value
        return None

    def text(self, name):
        """A text, URL or secret field; ``None`` when absent."""
        types = _wit.types()
        value = self._get(name)
        if isinstance(value, (types.ConfigValue_Text, types.ConfigValue_Secret)):
            return value.value
        return None

    def require_text(self, name):
        """A text, URL or secret field that must be present and not blank.
        Raises ``Err(ConfigError_Missing(name))`` otherwise: right as it is in
        ``validate_config``, and turned into the world's ``config`` error
        variant by ``import_errors`` / ``connector_errors``."""
        value = self.text(name)
        if value is None or not value.strip():
            raise _wit.err(_wit.types().ConfigError_Missing(name))
        return value

    def number(self, name):
        """A number field as a float; ``None`` when absent."""
        value = self._get(name)
        if isinstance(value, _wit.types().ConfigValue_Number):
            return value.value
        return None

    def flag(self, name, default=False):
        """A boolean field; ``default`` when absent."""
        value = self._get(name)
        if isinstance(value, _wit.types().ConfigValue_Boolean):
            return value.value
        return default

    def list(self, name):
        """A text-list field; ``[]`` when absent."""
        value = self._get(name)
        if isinstance(value, _wit.types().ConfigValue_TextList):
            return list(value.value)
        return []


def invalid(field, message):
    """The config-error ``invalid`` variant for ``field``:
    ``raise Err(invalid("base_url", "must not have a query"))``."""
    types = _wit.types()
    return types.ConfigError_Invalid(types.FieldProblem(field=field, message=message))


def missing(field):
    """The config-error ``missing`` variant for ``field``."""
    return _wit.types().ConfigError_Missing(field)


def field(name, label, help, kind, required):
    """A ``ConfigField`` for ``describe()``. ``kind`` is ``"text"``,
    ``"secret"``, ``"url"``, ``"number"``, ``"boolean"``, ``"text-list"``
    or a ``ConfigKind``. It must agree with the manifest's ``[[config]]``
    entry of the same name: same order, name, kind and required."""
    types = _wit.types()
    if isinstance(kind, str):
        kind = types.ConfigKind[kind.upper().replace("-", "_")]
    return types.ConfigField(name=name, label=label, help=help, kind=kind, required=required)
