"""Attribute values and directory records from plain Python values.

    user("7", email="ada@example.com", department=person.get("department"))

Python values map to the WIT ``value`` cases:

- ``str``                       -> ``text``
- ``bool``                      -> ``boolean``
- ``int`` / ``float``           -> ``number``
- ``Timestamp(ms)``, ``datetime`` -> ``timestamp`` (milliseconds, UTC; a naive
  ``datetime`` is taken as UTC)
- ``list`` / ``tuple`` of ``str`` -> ``text-list``
- a ``Value_*`` variant is kept as it is.

``None`` leaves the attribute out, which is what Cohort expects when the
source sent nothing (the Rust SDK's ``with_opt``).
"""

import datetime as _dt

from . import _wit


class Timestamp(int):
    """Milliseconds since the Unix epoch (UTC), as a ``timestamp`` value
    (a plain ``int`` would be a ``number``)."""

    def __repr__(self):
        return "Timestamp(%d)" % int(self)


def value(v):
    """The WIT ``Value`` variant for a Python value (see the module's doc)."""
    types = _wit.types()
    if isinstance(
        v,
        (
            types.Value_Text,
            types.Value_Number,
            types.Value_Boolean,
            types.Value_Timestamp,
            types.Value_TextList,
        ),
    ):
        return v
    if isinstance(v, str):
        return types.Value_Text(v)
    if isinstance(v, bool):
        return types.Value_Boolean(v)
    if isinstance(v, Timestamp):
        return types.Value_Timestamp(int(v))
    if isinstance(v, (int, float)):
        return types.Value_Number(float(v))
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=_dt.timezone.utc)
        return types.Value_Timestamp(int(v.timestamp() * 1000))
    if isinstance(v, (list, tuple)) and all(isinstance(i, str) for i in v):
        return types.Value_TextList(list(v))
    raise TypeError("%r cannot be an attribute value" % (v,))


def attribute(name, v):
    """An ``Attribute`` named ``name``."""
    return _wit.types().Attribute(name=name, value=value(v))


def _attributes(attributes, more):
    pairs = list(attributes.items()) if isinstance(attributes, dict) else list(attributes or ())
    pairs += list(more.items())
    return [attribute(name, v) for name, v in pairs if v is not None]


def user(external_id, attributes=None, **more):
    """A user ``DirectoryRecord``. Attributes come from ``attributes`` (a
    dict or ``(name, value)`` pairs) then the keyword arguments, in order;
    ``None`` values are left out."""
    types = _wit.types()
    return types.DirectoryRecord(
        kind=types.SubjectKind.USER,
        external_id=str(external_id),
        attributes=_attributes(attributes, more),
    )


def device(external_id, attributes=None, **more):
    """A device ``DirectoryRecord``, like ``user``."""
    types = _wit.types()
    return types.DirectoryRecord(
        kind=types.SubjectKind.DEVICE,
        external_id=str(external_id),
        attributes=_attributes(attributes, more),
    )


def plain(v):
    """The Python value of a WIT ``Value`` (the inverse of ``value``), for
    tests: text -> str, number -> float, boolean -> bool, text-list -> list,
    timestamp -> ``Timestamp``."""
    if type(v).__name__ == "Value_Timestamp":
        return Timestamp(v.value)
    if type(v).__name__ == "Value_TextList":
        return list(v.value)
    return v.value


def as_dict(record):
    """A record's (or a mapped identity's) attributes as ``{name: plain value}``."""
    return {a.name: plain(a.value) for a in record.attributes}
