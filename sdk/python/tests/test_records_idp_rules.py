"""Records from plain values, the IdP claim helpers and the rule-evaluator
batch and bitmap helpers.

Run from the repository root:
    python3 -m unittest discover -s sdk/python/tests -t sdk/python
"""

import datetime
import unittest

from componentize_py_types import Err
from wit_world.exports import rules as wit_rules
from wit_world.imports import types

from cohort_sdk import BadResponse, Timestamp, attribute, device, user, value
from cohort_sdk.idp import claim_attribute, parse_claims, standard_attributes, string_claim
from cohort_sdk.records import as_dict
from cohort_sdk.rules import BatchBuilder, BatchView, Matches


class Records(unittest.TestCase):
    def test_values(self):
        self.assertEqual(value("a"), types.Value_Text("a"))
        self.assertEqual(value(True), types.Value_Boolean(True))
        self.assertEqual(value(3), types.Value_Number(3.0))
        self.assertEqual(value(2.5), types.Value_Number(2.5))
        self.assertEqual(value(Timestamp(5)), types.Value_Timestamp(5))
        self.assertEqual(value(["a", "b"]), types.Value_TextList(["a", "b"]))
        self.assertEqual(
            value(datetime.datetime(1970, 1, 1, 0, 0, 1)), types.Value_Timestamp(1000)
        )
        self.assertEqual(value(types.Value_Text("x")), types.Value_Text("x"))
        for bad in (None, {"a": 1}, [1]):
            with self.assertRaises(TypeError):
                value(bad)

    def test_user_and_device_leave_out_none(self):
        u = user(7, {"email": "ada@example.com", "department": None}, first_name="Ada")
        self.assertEqual(u.kind, types.SubjectKind.USER)
        self.assertEqual(u.external_id, "7")
        self.assertEqual(
            u.attributes,
            [attribute("email", "ada@example.com"), attribute("first_name", "Ada")],
        )
        self.assertEqual(as_dict(u), {"email": "ada@example.com", "first_name": "Ada"})
        d = device("SN1", [("encrypted", True)])
        self.assertEqual(d.kind, types.SubjectKind.DEVICE)
        self.assertEqual(as_dict(d), {"encrypted": True})


class Claims(unittest.TestCase):
    CLAIMS = {
        "sub": "abc", "email": "ada@example.com", "email_verified": True,
        "given_name": "Ada", "family_name": "Lovelace", "name": "", "groups": ["a", 1, "b"],
    }

    def test_standard_attributes(self):
        attrs = {a.name: a.value for a in standard_attributes(self.CLAIMS, True)}
        self.assertEqual(
            attrs,
            {"email": types.Value_Text("ada@example.com"), "first_name": types.Value_Text("Ada"),
             "last_name": types.Value_Text("Lovelace")},
        )
        self.assertNotIn("email", [a.name for a in standard_attributes(self.CLAIMS, False)])

    def test_claim_attribute(self):
        self.assertEqual(claim_attribute("g", ["a", 1, "b"]).value, types.Value_TextList(["a", "b"]))
        self.assertEqual(claim_attribute("v", True).value, types.Value_Boolean(True))
        self.assertEqual(claim_attribute("n", 3).value, types.Value_Number(3.0))
        for nothing in ("", None, {"a": 1}):
            self.assertIsNone(claim_attribute("x", nothing))

    def test_string_claim_and_parse_claims(self):
        self.assertEqual(string_claim(self.CLAIMS, "sub"), "abc")
        for claims in ({}, {"sub": ""}, {"sub": 5}):
            with self.assertRaises(BadResponse) as caught:
                string_claim(claims, "sub")
            self.assertEqual(caught.exception.message, "the ID token has no `sub`")
        self.assertEqual(parse_claims('{"sub": "x"}'), {"sub": "x"})
        for bad in ("nope", "[1]"):
            with self.assertRaises(BadResponse):
                parse_claims(bad)


def cell(attribute, v):
    return wit_rules.Cell(attribute=attribute, value=v)


class Batches(unittest.TestCase):
    def test_builder_and_view_round_trip(self):
        batch = (
            BatchBuilder("user")
            .push({"department": "Zoë's team", "groups": ["a", "b"], "age": 3, "active": True})
            .push({"hired": Timestamp(1000), "department": None})
            .push({})
            .build()
        )
        self.assertEqual(batch.row_offsets, [0, 5, 6, 6])
        view = BatchView(batch)
        self.assertEqual(len(view), 3)
        self.assertEqual(view.kind, types.SubjectKind.USER)
        dep, groups = view.attribute_index("department"), view.attribute_index("groups")
        self.assertIsNone(view.attribute_index("title"))
        first = view.subject(0)
        self.assertEqual(first.values(dep), ["Zoë's team"])
        self.assertEqual(first.values(groups), ["a", "b"])
        self.assertEqual(first.as_dict(), {"department": "Zoë's team", "groups": ["a", "b"],
                                           "age": 3.0, "active": True})
        hired = view.subject(1).values(view.attribute_index("hired"))
        self.assertEqual(hired, [Timestamp(1000)])
        self.assertIsInstance(hired[0], Timestamp)
        self.assertFalse(view.subject(1).has(dep))
        self.assertEqual(view.subject(2).as_dict(), {})
        with self.assertRaises(IndexError):
            view.subject(3)
        self.assertEqual(view.column(dep), [["Zoë's team"], None, None])
        self.assertEqual(view.column(groups), [["a", "b"], None, None])

    def test_an_ascii_arena_is_read_by_byte_offsets_too(self):
        batch = BatchBuilder("device").push({"hostname": "web-1", "tags": ["a", "bc"]}).build()
        view = BatchView(batch)
        self.assertEqual(view.kind, types.SubjectKind.DEVICE)
        self.assertEqual(view.subject(0).as_dict(), {"hostname": "web-1", "tags": ["a", "bc"]})

    def test_malformed_batches_are_invalid_batch_errors(self):
        text = wit_rules.CellValue_Text
        span = wit_rules.Span
        cases = [
            ([], [], "subject-count + 1"),
            ([1], [], "start at 0"),
            ([0, 2], [cell(0, wit_rules.CellValue_Number(1.0))], "end at the number of cells"),
            ([0, 2, 1, 2], [cell(0, wit_rules.CellValue_Number(1.0))] * 2, "must not decrease"),
            ([0, 1], [cell(1, wit_rules.CellValue_Number(1.0))], "refers to attribute 1 of 1"),
            ([0, 1], [cell(0, text(span(offset=2, len=5)))], "outside the text arena"),
            ([0, 1], [cell(0, text(span(offset=1, len=1)))], "inside a character"),
        ]
        for offsets, cells, message in cases:
            batch = wit_rules.SubjectBatch(
                kind=types.SubjectKind.USER, attributes=["a"], text="é",
                row_offsets=offsets, cells=cells,
            )
            with self.assertRaises(Err) as caught:
                BatchView(batch)
            self.assertIsInstance(caught.exception.value, wit_rules.EvaluateError_InvalidBatch)
            self.assertIn(message, caught.exception.value.value)
        ascii_batch = wit_rules.SubjectBatch(
            kind=types.SubjectKind.USER, attributes=["a"], text="ab", row_offsets=[0, 1],
            cells=[cell(0, text(span(offset=1, len=2)))],
        )
        with self.assertRaises(Err) as caught:
            BatchView(ascii_batch)
        self.assertIn("outside the text arena", caught.exception.value.value)


class Bitmap(unittest.TestCase):
    def test_matches_are_rule_major_64_subjects_a_word(self):
        m = Matches(2, 130)
        self.assertEqual(m.words_per_rule, 3)
        m.set(0, 0)
        m.set(0, 63)
        m.set(1, 64)
        m.set(1, 129)
        ev = m.evaluation()
        self.assertEqual(ev.words_per_rule, 3)
        self.assertEqual(ev.matches, [1 | 1 << 63, 0, 0, 0, 1, 2])
        self.assertEqual((ev.explanations, ev.errors), ([], []))
        back = Matches.from_evaluation(ev)
        self.assertTrue(back.get(0, 63))
        self.assertFalse(back.get(0, 64))
        self.assertEqual(back.matching(1), [64, 129])
        self.assertEqual(Matches(1, 0).evaluation().matches, [])

    def test_set_many(self):
        m = Matches(2, 70)
        m.set_many(1, [0, 64, 69])
        self.assertEqual(m.words, [0, 0, 1, 1 | 1 << 5])
        self.assertEqual(m.matching(1), [0, 64, 69])


if __name__ == "__main__":
    unittest.main()
