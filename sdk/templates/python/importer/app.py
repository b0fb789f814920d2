"""A directory importer to copy and adapt, in Python.

It reads people from ``{base_url}/people`` with a bearer token, follows the
``next`` link each page carries, and maps each person to a Cohort user. The
source is expected to answer:

    {"people": [{"id": "7", "email": "ada@example.com", "first_name": "Ada",
                 "last_name": "Lovelace", "department": "R&D", "title": "Engineer"}],
     "next": "https://hr.example.com/api/people?page=2"}

with ``next`` null or absent on the last page. Change ``map_person`` and the
page reading in ``fetch_page`` to fit your source.

Build with ``cohort plugin build``, or by hand from this folder (``wit/`` and
``cohort_sdk/`` beside this file, as ``cohort plugin new`` writes them):

    componentize-py -d wit/cohort-plugin@0.1.0 -w directory-importer componentize app -o dist/my-importer.wasm

componentize-py looks for a class named after the exported interface
(``Importer``) in the ``app`` module.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import importer
from wit_world.imports import types

from cohort_sdk import BadResponse, Config, field, http, import_errors, invalid, log, user


class Importer(exports.Importer):
    def describe(self):
        # Must match plugin.toml's [[config]] entries: same fields, same order,
        # same name, kind and required (the server refuses the plugin
        # otherwise); `cohort plugin package --strict` also compares label and help.
        return types.PluginInfo(
            display_name="My importer",
            description="Imports people from the Example HR API.",
            config=[
                field(
                    "base_url",
                    "API base URL",
                    "For example https://hr.example.com/api; people are read from <base URL>/people.",
                    "url",
                    True,
                ),
                field("api_token", "API token", "Sent as a bearer token.", "secret", True),
            ],
        )

    def validate_config(self, config):
        # The host has already checked that base_url is an absolute http(s) URL
        # and that both fields are present; check what only this plugin knows.
        # A refusal is `raise Err(<config-error>)`: require_text raises the
        # `missing` one itself, `invalid(field, message)` builds the other.
        config = Config(config)
        base_url = config.require_text("base_url")
        if "?" in base_url or "#" in base_url:
            raise Err(invalid("base_url", "give the API's base URL, without a query or fragment"))
        config.require_text("api_token")

    # @import_errors turns what the SDK raises (HTTP failures, 401/403, 429/503,
    # other statuses, undecodable JSON, BadResponse, config errors) into the
    # matching Err(import-error). Any other exception is a trap: the call fails
    # with plugin_trap and counts against the plugin's health, so check the
    # source's data instead of letting a KeyError escape.
    @import_errors
    def fetch_page(self, config, cursor):
        config = Config(config)
        base_url = config.require_text("base_url").rstrip("/")
        token = config.require_text("api_token")
        if cursor is None:
            url = base_url + "/people"
        elif cursor.startswith(base_url + "/"):
            # The token goes with every request, so only follow links that
            # stay under the configured API.
            url = cursor
        else:
            raise BadResponse("the next-page link %s is not under %s" % (cursor, base_url))

        page, _response = http.request("GET", url).bearer(token).fetch_json()
        people = page.get("people") if isinstance(page, dict) else None
        if not isinstance(people, list):
            raise BadResponse("the page has no `people` list")
        next_url = page.get("next")
        if next_url is not None and not isinstance(next_url, str):
            raise BadResponse("`next` is not a URL")

        records = []
        problems = []
        for person in people:
            record, problem = map_person(person)
            if record is not None:
                records.append(record)
            else:
                problems.append(problem)
        log.info("fetched page", records=len(records), problems=len(problems))
        # The host calls fetch_page again with next_cursor until it is None.
        # A cursor is any string: a URL here, or a page token, an offset...
        return importer.Page(records=records, problems=problems, next_cursor=next_url)


def text(person, name):
    """A string field of the source, or None (null, absent or another type)."""
    value = person.get(name)
    return value if isinstance(value, str) else None


def map_person(person):
    """One person of the source as (record, None), or (None, problem) when it
    cannot be imported. A problem is reported to the admin and does not fail
    the run."""
    ident = person.get("id") if isinstance(person, dict) else None
    if isinstance(ident, int) and not isinstance(ident, bool):
        ident = str(ident)
    if not isinstance(ident, str) or not ident:
        return None, importer.RecordProblem(external_id=None, message="a person without an id")
    email = text(person, "email")
    if email is None or "@" not in email:
        return None, importer.RecordProblem(external_id=ident, message="no valid email address")
    # Attribute names are Cohort's schema names. None leaves an attribute
    # out, which is what Cohort expects when the source sent nothing.
    record = user(
        ident,
        email=email,
        first_name=text(person, "first_name"),
        last_name=text(person, "last_name"),
        department=text(person, "department"),
        job_title=text(person, "title"),
    )
    return record, None
