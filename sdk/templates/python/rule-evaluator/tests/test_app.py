"""Unit tests of app.py. A rule evaluator calls no host, so no FakeHost is
needed; cohort_sdk.rules.BatchBuilder makes the batches.

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

from cohort_sdk.testing import find_wit, load_bindings  # noqa: E402

load_bindings("rule-evaluator", wit=find_wit(PROJECT))  # wit/cohort-plugin@0.1.0

from componentize_py_types import Err  # noqa: E402
from wit_world.exports import rules as wit  # noqa: E402
from wit_world.imports import types  # noqa: E402

from cohort_sdk.rules import BatchBuilder, Matches  # noqa: E402

import app  # noqa: E402
import rules  # noqa: E402

USER = types.SubjectKind.USER


def attr(name, type_, kind=USER):
    return types.AttributeDef(name=name, kind=kind, type=type_, custom=False)


SCHEMA = [
    attr("department", types.AttributeType.TEXT),
    attr("title", types.AttributeType.TEXT),
    attr("groups", types.AttributeType.TEXT_LIST),
    attr("age", types.AttributeType.NUMBER),
    attr("hostname", types.AttributeType.TEXT, types.SubjectKind.DEVICE),
]

SUBJECTS = [
    {"department": "Engineering", "groups": ["staff", "admins"]},
    {"department": "Sales", "title": "Contractor", "groups": ["staff"]},
    {"title": "CEO"},  # no department
    {"department": "engineering"},
]


def compile_rules(*texts):
    return app.Rules().compile(USER, SCHEMA, [wit.RuleSource(text=t) for t in texts])


def evaluate(rule_set, subjects=SUBJECTS, explain=False):
    batch = BatchBuilder("user")
    for s in subjects:
        batch.push(s)
    return rule_set.evaluate(batch.build(), wit.EvaluateOptions(now_millis=0, explain=explain))


def matching(evaluation):
    m = Matches.from_evaluation(evaluation)
    return [m.matching(r) for r in range(len(evaluation.matches) // max(evaluation.words_per_rule, 1))]


class Compile(unittest.TestCase):
    def test_describe(self):
        self.assertEqual(app.Rules().describe().language, "equals")

    def test_the_resource_class_is_where_componentize_py_looks(self):
        self.assertIs(rules.RuleSet, app.RuleSet)

    def test_compiles_rules(self):
        rule_set = compile_rules('department == "Engineering"', ' title!="Contractor" ', 'groups == "admins"')
        self.assertEqual(rule_set.len(), 3)

    def test_reports_every_problem_with_its_position(self):
        with self.assertRaises(Err) as caught:
            compile_rules(
                'department == "Engineering"',
                "",
                'team == "x"',
                'age == "3"',
                'department = "x"',
                "department == Engineering",
                'department == "Engin',
                'department == "a" extra',
                'department == "a\\n"',
                '"x" == department',
                'hostname == "x"',
            )
        error = caught.exception.value
        self.assertIsInstance(error, wit.CompileError_Invalid)
        got = [(p.rule, p.at, p.message) for p in error.value]
        self.assertEqual([(rule, at) for rule, at, _ in got], [
            (1, "1:1"), (2, "1:1"), (3, "1:1"), (4, "1:12"), (5, "1:15"), (6, "1:15"),
            (7, "1:19"), (8, "1:17"), (9, "1:1"), (10, "1:1"),
        ])
        messages = [m for _, _, m in got]
        self.assertIn("empty", messages[0])
        self.assertEqual(messages[1], "no user attribute is named team")
        self.assertIn("age is a number attribute", messages[2])
        self.assertEqual(messages[3], "expected == or !=")
        self.assertIn("double quotes", messages[4])
        self.assertIn("not closed", messages[5])
        self.assertIn("after the rule", messages[6])
        self.assertIn("unknown escape", messages[7])
        self.assertEqual(messages[8], "expected an attribute name")
        self.assertEqual(messages[9], "no user attribute is named hostname")

    def test_positions_count_lines(self):
        with self.assertRaises(Err) as caught:
            compile_rules('department\n  = "x"')
        self.assertEqual(caught.exception.value.value[0].at, "2:3")

    def test_escapes(self):
        rule_set = compile_rules('title == "say \\"hi\\" \\\\o/"')
        self.assertEqual(rule_set.conditions[0].text, 'say "hi" \\o/')


class Evaluate(unittest.TestCase):
    def test_equals_and_not_equals(self):
        rule_set = compile_rules('department == "Engineering"', 'department != "Engineering"')
        # Subject 2 has no department: it matches neither rule.
        self.assertEqual(matching(evaluate(rule_set)), [[0], [1, 3]])

    def test_text_lists(self):
        rule_set = compile_rules('groups == "admins"', 'groups != "admins"')
        self.assertEqual(matching(evaluate(rule_set)), [[0], [1]])

    def test_an_attribute_no_subject_has(self):
        rule_set = compile_rules('title == "CEO"')
        self.assertEqual(matching(evaluate(rule_set, [{"department": "x"}])), [[]])

    def test_more_than_64_subjects(self):
        subjects = [{"department": "Sales" if i % 2 else "Engineering"} for i in range(130)]
        evaluation = evaluate(compile_rules('department == "Sales"'), subjects)
        self.assertEqual(evaluation.words_per_rule, 3)
        self.assertEqual(matching(evaluation), [list(range(1, 130, 2))])

    def test_explanations(self):
        evaluation = evaluate(compile_rules('department == "Engineering"'), SUBJECTS[:3], explain=True)
        self.assertEqual(
            [(e.subject, e.matched, e.detail) for e in evaluation.explanations],
            [(0, True, 'department is "Engineering"'),
             (1, False, 'department is "Sales", not "Engineering"'),
             (2, False, "department is missing")],
        )
        self.assertEqual(evaluate(compile_rules('title == "x"')).explanations, [])

    def test_a_malformed_batch_is_refused(self):
        batch = wit.SubjectBatch(kind=USER, attributes=[], text="", row_offsets=[0, 1], cells=[])
        with self.assertRaises(Err) as caught:
            compile_rules('title == "x"').evaluate(batch, wit.EvaluateOptions(now_millis=0, explain=False))
        self.assertIsInstance(caught.exception.value, wit.EvaluateError_InvalidBatch)


if __name__ == "__main__":
    unittest.main()
