"""Helpers for IdP connectors (the ``idp-connector`` world).

    claims = parse_claims(claims)                 # the call's Claims record -> dict
    subject = string_claim(claims, "sub")
    attributes = standard_attributes(claims, trust_email=claims.get("email_verified") is True)
"""

import json as _json

from . import records
from .errors import BadResponse

#: Standard OpenID Connect claims and the directory attributes they fill.
STANDARD_CLAIMS = (
    ("email", "email"),
    ("given_name", "first_name"),
    ("family_name", "last_name"),
    ("name", "display_name"),
)


def parse_claims(claims):
    """The claims JSON object as a dict. ``claims`` is the ``Claims`` record
    ``map_claims`` receives, or its JSON text. Raises ``BadResponse``."""
    text = getattr(claims, "json", claims)
    try:
        value = _json.loads(text)
    except ValueError as e:
        raise BadResponse("claims are not JSON: %s" % e) from None
    if not isinstance(value, dict):
        raise BadResponse("claims are not a JSON object")
    return value


def claim_attribute(name, claim):
    """A claim's value as attribute ``name``: non-empty strings as text,
    numbers and booleans as they are, arrays as text lists (their strings);
    ``None`` for empty strings, objects and nulls."""
    if isinstance(claim, str):
        return records.attribute(name, claim) if claim else None
    if isinstance(claim, bool):
        return records.attribute(name, claim)
    if isinstance(claim, (int, float)):
        return records.attribute(name, float(claim))
    if isinstance(claim, list):
        return records.attribute(name, [i for i in claim if isinstance(i, str)])
    return None


def standard_attributes(claims, trust_email):
    """The attributes of ``STANDARD_CLAIMS`` present in ``claims``. With
    ``trust_email`` false, ``email`` is left out: an email the provider does
    not vouch for must not be matched against the directory."""
    out = []
    for claim, attr in STANDARD_CLAIMS:
        if claim == "email" and not trust_email:
            continue
        if claim in claims:
            a = claim_attribute(attr, claims[claim])
            if a is not None:
                out.append(a)
    return out


def string_claim(claims, name):
    """A required, non-empty string claim. Raises ``BadResponse``."""
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise BadResponse("the ID token has no `%s`" % name)
    return value
