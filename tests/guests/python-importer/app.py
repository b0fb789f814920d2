"""A directory importer written in Python, built with componentize-py.

It is the example for plugin authors who do not write Rust, and the test suite
uses it to prove two things: the WIT contract works for other languages, and a
WASI component finds nothing of the server's files or environment.

Config:
  people  text-list  one "id,email,department" entry per person
  probe   boolean    instead of people, return one record per sandbox probe
"""

import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types
from wit_world.exports import importer


def _config(entries, name):
    for entry in entries:
        if entry.name == name:
            return entry.value.value
    return None


def _probe(name, action):
    try:
        outcome = "found: " + repr(action())[:200]
    except Exception as e:  # the sandbox answering "no" is the expected path
        outcome = "denied: " + type(e).__name__
    return types.DirectoryRecord(
        kind=types.SubjectKind.USER,
        external_id=name,
        attributes=[types.Attribute(name="probe", value=types.Value_Text(outcome))],
    )


class Importer(exports.Importer):
    def describe(self):
        return types.PluginInfo(
            display_name="Python roster",
            description="Imports people listed in its configuration.",
            config=[
                types.ConfigField(
                    name="people",
                    label="People",
                    help='One "id,email,department" entry per person.',
                    kind=types.ConfigKind.TEXT_LIST,
                    required=False,
                ),
                types.ConfigField(
                    name="probe",
                    label="Probe the sandbox",
                    help="Return what the plugin can see of files and environment.",
                    kind=types.ConfigKind.BOOLEAN,
                    required=False,
                ),
            ],
        )

    def validate_config(self, config):
        for entry in _config(config, "people") or []:
            if entry.count(",") != 2:
                raise Err(types.ConfigError_Invalid(types.FieldProblem(
                    field="people", message=f'"{entry}" is not "id,email,department"')))

    def fetch_page(self, config, cursor):
        host.log(host.Level.INFO, "python importer called", [("cursor", cursor or "")])
        if _config(config, "probe"):
            records = [
                _probe("read-file", lambda: open("/etc/passwd").read()),
                _probe("list-root", lambda: os.listdir("/")),
                _probe("environment", lambda: dict(os.environ) or (_ for _ in ()).throw(KeyError("empty"))),
                _probe("home", lambda: os.environ["HOME"]),
            ]
            return importer.Page(records=records, problems=[], next_cursor=None)
        records = []
        for entry in _config(config, "people") or []:
            ident, email, department = entry.split(",")
            records.append(types.DirectoryRecord(
                kind=types.SubjectKind.USER,
                external_id=ident,
                attributes=[
                    types.Attribute(name="email", value=types.Value_Text(email)),
                    types.Attribute(name="department", value=types.Value_Text(department)),
                ],
            ))
        return importer.Page(records=records, problems=[], next_cursor=None)
