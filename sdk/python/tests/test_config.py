"""Config helpers.

Run from the repository root:
    python3 -m unittest discover -s sdk/python/tests -t sdk/python
"""

import unittest

from componentize_py_types import Err
from wit_world.imports import types

from cohort_sdk import Config, field, invalid, missing
from cohort_sdk.testing import config_entries


def config(**values):
    return Config(config_entries(values, secrets={"api_token"}))


class ConfigAccess(unittest.TestCase):
    def test_text_reads_text_url_and_secret_fields(self):
        c = config(base_url="https://hr.example.com/api", api_token="s3cret", page_size=50)
        self.assertEqual(c.text("base_url"), "https://hr.example.com/api")
        self.assertEqual(c.text("api_token"), "s3cret")
        self.assertIsInstance(c.entries[1].value, types.ConfigValue_Secret)
        self.assertIsNone(c.text("page_size"))
        self.assertIsNone(c.text("absent"))

    def test_require_text_raises_the_missing_config_error(self):
        c = config(blank="  ", base_url="https://x.test")
        self.assertEqual(c.require_text("base_url"), "https://x.test")
        for name in ("blank", "absent"):
            with self.assertRaises(Err) as caught:
                c.require_text(name)
            self.assertEqual(caught.exception.value, types.ConfigError_Missing(name))

    def test_number_flag_and_list(self):
        c = config(page_size=50, verified=False, domains=["a.test", "b.test"], name="x")
        self.assertEqual(c.number("page_size"), 50.0)
        self.assertIsNone(c.number("name"))
        self.assertIsNone(c.number("absent"))
        self.assertFalse(c.flag("verified", True))
        self.assertTrue(c.flag("absent", True))
        self.assertFalse(c.flag("absent"))
        self.assertTrue(c.flag("name", True))  # not a boolean: the default
        self.assertEqual(c.list("domains"), ["a.test", "b.test"])
        self.assertEqual(c.list("absent"), [])
        self.assertEqual(c.list("name"), [])

    def test_a_config_wraps_a_config(self):
        c = config(a="1")
        self.assertEqual(Config(c).text("a"), "1")
        self.assertIsNone(Config().text("a"))

    def test_invalid_and_missing_build_config_errors(self):
        self.assertEqual(
            invalid("base_url", "no query"),
            types.ConfigError_Invalid(types.FieldProblem(field="base_url", message="no query")),
        )
        self.assertEqual(missing("api_token"), types.ConfigError_Missing("api_token"))

    def test_field_takes_kind_names(self):
        f = field("scopes", "Scopes", "Extra scopes.", "text-list", False)
        self.assertEqual(
            f,
            types.ConfigField(
                name="scopes", label="Scopes", help="Extra scopes.",
                kind=types.ConfigKind.TEXT_LIST, required=False,
            ),
        )
        for name, kind in [("url", types.ConfigKind.URL), ("secret", types.ConfigKind.SECRET),
                           ("text", types.ConfigKind.TEXT), ("number", types.ConfigKind.NUMBER),
                           ("boolean", types.ConfigKind.BOOLEAN)]:
            self.assertEqual(field("f", "F", "", name, True).kind, kind)
        self.assertEqual(field("f", "F", "", types.ConfigKind.URL, True).kind, types.ConfigKind.URL)


if __name__ == "__main__":
    unittest.main()
