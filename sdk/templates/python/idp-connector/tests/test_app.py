"""Unit tests of app.py, with the host replaced by cohort_sdk.testing.FakeHost.

Run from the plugin's folder (with wit/ and cohort_sdk/ beside app.py, as
`cohort plugin new` writes them):

    python3 -m unittest discover -s tests

load_bindings() generates componentize-py's stub bindings for the world into
a cache folder and puts them on sys.path, so app.py imports as it does in
the component. tests/cases/*.json are run against the built component by
`cohort plugin test`, not by this file.
"""

import json
import sys
import unittest
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from cohort_sdk.testing import FakeHost, config_entries, find_wit, load_bindings  # noqa: E402

load_bindings("idp-connector", wit=find_wit(PROJECT))  # wit/cohort-plugin@0.1.0

from componentize_py_types import Err  # noqa: E402
from wit_world.exports import idp  # noqa: E402
from wit_world.imports import types  # noqa: E402

from cohort_sdk.records import as_dict  # noqa: E402

import app  # noqa: E402

ISSUER = "https://login.example.com"


def config(**values):
    values = {"issuer": ISSUER, "client_id": "cohort", "client_secret": "s3cret", **values}
    return config_entries(values, secrets={"client_secret"})


def claims(**values):
    return idp.Claims(json=json.dumps(values))


class Describe(unittest.TestCase):
    def test_fields_are_the_manifest_ones(self):
        info = app.Idp().describe()
        self.assertEqual(
            [(f.name, f.kind, f.required) for f in info.config],
            [("issuer", types.ConfigKind.URL, True), ("client_id", types.ConfigKind.TEXT, True),
             ("client_secret", types.ConfigKind.SECRET, True)],
        )


class ValidateConfig(unittest.TestCase):
    def test_accepts_an_issuer(self):
        self.assertIsNone(app.Idp().validate_config(config()))

    def test_refuses_a_discovery_url(self):
        with self.assertRaises(Err) as caught:
            app.Idp().validate_config(config(issuer=ISSUER + "/.well-known/openid-configuration"))
        self.assertIsInstance(caught.exception.value, types.ConfigError_Invalid)

    def test_refuses_a_query(self):
        with self.assertRaises(Err) as caught:
            app.Idp().validate_config(config(issuer=ISSUER + "?tenant=x"))
        self.assertEqual(caught.exception.value.value.field, "issuer")


class Endpoints(unittest.TestCase):
    def test_issuer_and_scopes(self):
        e = app.Idp().endpoints(config())
        self.assertEqual(
            e,
            idp.ProviderEndpoints(issuer=ISSUER, issuer_aliases=[],
                                  scopes=["openid", "email", "profile"], authorize_params=[]),
        )

    def test_a_missing_issuer_is_a_config_error(self):
        with self.assertRaises(Err) as caught:
            app.Idp().endpoints(config_entries({"client_id": "cohort"}))
        self.assertEqual(caught.exception.value, idp.ConnectorError_Config(types.ConfigError_Missing("issuer")))


class MapClaims(unittest.TestCase):
    def test_maps_standard_claims(self):
        with FakeHost() as fake:
            m = app.Idp().map_claims(config(), claims(
                sub="00u1", email="ada@example.com", email_verified=True,
                given_name="Ada", family_name="Lovelace", name="Ada Lovelace", locale="en"))
        self.assertEqual(m.subject, "00u1")
        self.assertEqual(as_dict(m), {"email": "ada@example.com", "first_name": "Ada",
                                      "last_name": "Lovelace", "display_name": "Ada Lovelace"})
        self.assertEqual(fake.requests, [])  # the connector calls no host

    def test_an_unverified_email_is_left_out(self):
        for verified in ({"email_verified": False}, {}, {"email_verified": "true"}):
            m = app.Idp().map_claims(config(), claims(sub="1", email="ada@example.com", **verified))
            self.assertNotIn("email", as_dict(m), verified)

    def test_no_subject_is_a_bad_response(self):
        with self.assertRaises(Err) as caught:
            app.Idp().map_claims(config(), claims(email="ada@example.com"))
        self.assertEqual(caught.exception.value, idp.ConnectorError_BadResponse("the ID token has no `sub`"))

    def test_claims_that_are_not_json(self):
        with self.assertRaises(Err) as caught:
            app.Idp().map_claims(config(), idp.Claims(json="{"))
        self.assertIsInstance(caught.exception.value, idp.ConnectorError_BadResponse)


class ListUsers(unittest.TestCase):
    def test_listing_is_not_supported(self):
        with self.assertRaises(Err) as caught:
            app.Idp().list_users(config(), None)
        self.assertEqual(caught.exception.value, idp.ConnectorError_Other("this connector cannot list users"))


if __name__ == "__main__":
    unittest.main()
