"""A rule evaluator to copy and adapt, in Python: the "equals" language.

One rule is one comparison of a text attribute with a quoted text:

    department == "Engineering"
    title != "Contractor"

- the attribute is a name from Cohort's schema for the kind of subject the
  rules are about (``[A-Za-z_][A-Za-z0-9_]*``), of type text or text-list;
- the operator is ``==`` or ``!=``; spaces around it are optional;
- the text is in double quotes; ``\\"`` is a quote and ``\\\\`` a backslash
  inside it. Comparison is exact (case-sensitive).
- For a text-list attribute, ``==`` holds when one element equals the text,
  ``!=`` when none does.
- A subject without the attribute (or with an empty list) matches neither
  ``==`` nor ``!=``: in Cohort a missing attribute satisfies no condition.

``compile`` reports every rule's problem with ``at`` as ``line:column``
(1-based, in characters) of the place it concerns.

Build with ``cohort plugin build``, or by hand from this folder (``wit/`` and
``cohort_sdk/`` beside this file, as ``cohort plugin new`` writes them):

    componentize-py -d wit/cohort-plugin@0.1.0 -w rule-evaluator componentize app -o dist/my-rules.wasm

componentize-py looks for a class named after the exported interface
(``Rules``) in the ``app`` module, and for the ``rule-set`` resource's class
(``RuleSet``) in a module named after the interface: ``rules.py`` beside
this file re-exports it from here.
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import rules as wit
from wit_world.imports import types

from cohort_sdk.rules import BatchView, Matches

#: The attribute types a rule can compare.
COMPARABLE = (types.AttributeType.TEXT, types.AttributeType.TEXT_LIST)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = re.compile(r"\s*")


class Condition:
    """A compiled rule: ``attribute`` ``==``/``!=`` ``text``."""

    def __init__(self, attribute, equal, text):
        self.attribute = attribute
        self.equal = equal
        self.text = text

    def describe(self, values):
        """A short sentence for explanations."""
        if not values:
            return "%s is missing" % self.attribute
        shown = json.dumps(values[0] if len(values) == 1 else values, ensure_ascii=False)
        if self.text in values:
            return "%s is %s" % (self.attribute, shown)
        return "%s is %s, not %s" % (self.attribute, shown, json.dumps(self.text, ensure_ascii=False))


class Problem(Exception):
    """A compile problem at character ``offset`` of the rule."""

    def __init__(self, offset, message):
        super().__init__(message)
        self.offset = offset
        self.message = message


def position(text, offset):
    """``line:column`` (1-based) of character ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return "%d:%d" % (line, column)


def parse(text, kind, schema):
    """Compile one rule's text into a ``Condition``, or raise ``Problem``."""
    i = _SPACE.match(text).end()
    if i == len(text):
        raise Problem(0, "the rule is empty; write for example: department == \"Engineering\"")
    name = _NAME.match(text, i)
    if name is None:
        raise Problem(i, "expected an attribute name")
    attribute = name.group()
    definition = next((d for d in schema if d.name == attribute and d.kind == kind), None)
    if definition is None:
        raise Problem(i, "no %s attribute is named %s" % (kind.name.lower(), attribute))
    if definition.type not in COMPARABLE:
        raise Problem(
            i,
            "%s is a %s attribute; only text and text-list attributes can be compared"
            % (attribute, definition.type.name.lower().replace("_", "-")),
        )
    i = _SPACE.match(text, name.end()).end()
    operator = text[i:i + 2]
    if operator not in ("==", "!="):
        raise Problem(i, "expected == or !=")
    i = _SPACE.match(text, i + 2).end()
    if text[i:i + 1] != '"':
        raise Problem(i, 'expected a text in double quotes')
    value, i = _quoted(text, i)
    i = _SPACE.match(text, i).end()
    if i != len(text):
        raise Problem(i, "unexpected text after the rule")
    return Condition(attribute, operator == "==", value)


def _quoted(text, start):
    """The text of the quoted string at ``start`` and the offset after it."""
    out = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            escaped = text[i + 1:i + 2]
            if escaped not in ('"', "\\"):
                raise Problem(i, 'unknown escape; inside quotes write \\" or \\\\')
            out.append(escaped)
            i += 2
            continue
        out.append(c)
        i += 1
    raise Problem(start, "the text is not closed with a double quote")


class Rules(exports.Rules):
    def describe(self):
        return wit.EvaluatorInfo(
            display_name="My rules",
            language="equals",
            description='One comparison per rule: department == "Engineering" or title != "Contractor".',
        )

    def compile(self, kind, schema, rules):
        conditions = []
        problems = []
        for index, rule in enumerate(rules):
            try:
                conditions.append(parse(rule.text, kind, schema))
            except Problem as p:
                problems.append(
                    wit.RuleProblem(rule=index, at=position(rule.text, p.offset), message=p.message)
                )
        # Report every rule's problem at once, so the admin can fix them all.
        if problems:
            raise Err(wit.CompileError_Invalid(problems))
        return RuleSet(conditions)


class RuleSet(wit.RuleSet):
    """The compiled rules. The host keeps it and evaluates many batches with it."""

    def __init__(self, conditions):
        self.conditions = conditions

    def len(self):
        return len(self.conditions)

    def evaluate(self, batch, options):
        # BatchView checks the batch (raising Err(invalid-batch) when it is
        # malformed) and reads it once into columns. The host sends up to
        # 4,096 subjects and 200,000 rule-subject pairs a call, under a CPU
        # budget (100 ms by default): keep the per-subject work to list
        # comprehensions over columns, as below.
        view = BatchView(batch)
        n = len(view)
        matches = Matches(len(self.conditions), n)
        explanations = []
        for r, condition in enumerate(self.conditions):
            index = view.attribute_index(condition.attribute)
            # An attribute no subject in the batch has is not in the batch.
            column = view.column(index) if index is not None else [None] * n
            text = condition.text
            # `values` is None for a subject without the attribute: it
            # satisfies neither == nor !=.
            if condition.equal:
                hits = [s for s, values in enumerate(column) if values and text in values]
            else:
                hits = [s for s, values in enumerate(column) if values and text not in values]
            matches.set_many(r, hits)
            if options.explain:
                # Explanations are asked for small batches ("why is this
                # subject in this group?"), so this loop may be slow.
                matched = set(hits)
                for s, values in enumerate(column):
                    explanations.append(wit.ConditionOutcome(
                        rule=r, subject=s, at="", matched=s in matched,
                        detail=condition.describe(values or []),
                    ))
        # options.now_millis is the evaluation time, for relative conditions;
        # use it rather than the clock so that a preview and the run agree.
        return matches.evaluation(explanations=explanations)
