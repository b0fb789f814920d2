"""Unit tests of app.py, with the host replaced by cohort_sdk.testing.FakeHost.

Run from the plugin's folder (with wit/ and cohort_sdk/ beside app.py, as
`cohort plugin new` writes them):

    python3 -m unittest discover -s tests

load_bindings() generates componentize-py's stub bindings for the world into
a cache folder and puts them on sys.path, so app.py imports as it does in
the component. tests/cases/*.json are run against the built component by
`cohort plugin test`, not by this file.
"""

import sys
import unittest
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from cohort_sdk.testing import FakeHost, config_entries, find_wit, load_bindings  # noqa: E402

load_bindings("directory-importer", wit=find_wit(PROJECT))  # wit/cohort-plugin@0.1.0

from componentize_py_types import Err  # noqa: E402
from wit_world.exports import importer  # noqa: E402
from wit_world.imports import host, types  # noqa: E402

from cohort_sdk.records import as_dict  # noqa: E402

import app  # noqa: E402

BASE = "https://hr.example.com/api"


def config(base_url=BASE + "/", api_token="s3cret"):
    return config_entries({"base_url": base_url, "api_token": api_token}, secrets={"api_token"})


class Describe(unittest.TestCase):
    def test_fields_are_the_manifest_ones(self):
        info = app.Importer().describe()
        self.assertEqual(
            [(f.name, f.kind, f.required) for f in info.config],
            [("base_url", types.ConfigKind.URL, True), ("api_token", types.ConfigKind.SECRET, True)],
        )


class ValidateConfig(unittest.TestCase):
    def test_accepts_a_base_url(self):
        self.assertIsNone(app.Importer().validate_config(config()))

    def test_refuses_a_query(self):
        with self.assertRaises(Err) as caught:
            app.Importer().validate_config(config(base_url=BASE + "?x=1"))
        self.assertIsInstance(caught.exception.value, types.ConfigError_Invalid)
        self.assertEqual(caught.exception.value.value.field, "base_url")

    def test_a_blank_token_is_missing(self):
        with self.assertRaises(Err) as caught:
            app.Importer().validate_config(config(api_token=" "))
        self.assertEqual(caught.exception.value, types.ConfigError_Missing("api_token"))


class FetchPage(unittest.TestCase):
    def test_maps_people_and_follows_next(self):
        fake = (
            FakeHost()
            .respond(BASE + "/people", json={
                "people": [
                    {"id": "7", "email": "ada@example.com", "first_name": "Ada", "department": None},
                    {"id": "8", "email": None},
                ],
                "next": BASE + "/people?page=2",
            })
            .respond(BASE + "/people?page=2", json={
                "people": [{"id": 9, "email": "bob@example.com", "title": "Engineer"}],
            })
        )
        with fake:
            first = app.Importer().fetch_page(config(), None)
            second = app.Importer().fetch_page(config(), first.next_cursor)

        self.assertEqual([r.external_id for r in first.records], ["7"])
        self.assertEqual(as_dict(first.records[0]), {"email": "ada@example.com", "first_name": "Ada"})
        self.assertEqual(first.problems, [importer.RecordProblem(external_id="8", message="no valid email address")])
        self.assertEqual(first.next_cursor, BASE + "/people?page=2")
        self.assertEqual(as_dict(second.records[0]), {"email": "bob@example.com", "job_title": "Engineer"})
        self.assertIsNone(second.next_cursor)

        self.assertEqual([r.url for r in fake.requests], [BASE + "/people", BASE + "/people?page=2"])
        self.assertEqual(fake.request_headers(0)["authorization"], "Bearer s3cret")
        self.assertEqual(fake.logs[0].message, "fetched page")
        self.assertEqual(fake.logs[0].fields, {"records": "1", "problems": "1"})

    def test_a_refused_token_is_unauthorized(self):
        with FakeHost().respond(BASE + "/people", 401, json={"error": "bad token"}):
            with self.assertRaises(Err) as caught:
                app.Importer().fetch_page(config(), None)
        self.assertIsInstance(caught.exception.value, importer.ImportError_Unauthorized)

    def test_rate_limits_are_passed_on(self):
        with FakeHost().respond(BASE + "/people", 429, headers={"retry-after": "60"}):
            with self.assertRaises(Err) as caught:
                app.Importer().fetch_page(config(), None)
        self.assertEqual(caught.exception.value, importer.ImportError_RateLimited(60))

    def test_a_host_missing_from_allowed_hosts_is_an_http_error(self):
        with FakeHost():  # nothing recorded: every URL is refused
            with self.assertRaises(Err) as caught:
                app.Importer().fetch_page(config(), None)
        self.assertIsInstance(caught.exception.value, importer.ImportError_Http)
        self.assertIsInstance(caught.exception.value.value, host.HttpError_HostNotAllowed)

    def test_does_not_follow_links_off_the_api(self):
        with FakeHost() as fake:
            with self.assertRaises(Err) as caught:
                app.Importer().fetch_page(config(), "https://evil.example.com/people")
        self.assertIsInstance(caught.exception.value, importer.ImportError_BadResponse)
        self.assertEqual(fake.requests, [])

    def test_a_page_without_people_is_a_bad_response(self):
        with FakeHost().respond(BASE + "/people", json={"items": []}):
            with self.assertRaises(Err) as caught:
                app.Importer().fetch_page(config(), None)
        self.assertEqual(caught.exception.value, importer.ImportError_BadResponse("the page has no `people` list"))

    def test_missing_token_is_a_config_error(self):
        entries = config_entries({"base_url": BASE})
        with FakeHost():
            with self.assertRaises(Err) as caught:
                app.Importer().fetch_page(entries, None)
        self.assertEqual(caught.exception.value, importer.ImportError_Config(types.ConfigError_Missing("api_token")))


if __name__ == "__main__":
    unittest.main()
