// Prints the sections of CEL's conformance suite (from @bufbuild/cel-spec)
// that apply to Cohort's rules, as one JSON array of flat cases:
//   {section, path, expr, bindings, value | error, disableCheck, container}
// host/tests/cel_conformance.rs runs it and checks Cohort's CEL module.
"use strict";
const { tests } = require("@bufbuild/cel-spec/testdata/conformance.js");

const SECTIONS = [
  "basic",
  "logic",
  "comparisons",
  "string",
  "macros",
  "timestamps",
  "integer_math",
  "fp_math",
  "lists",
  "parse",
  "string_ext",
  "conversions",
];

const out = [];
function walk(section, suite, path) {
  for (const t of suite.tests || []) {
    const o = t.original;
    out.push({
      section,
      path: [...path, o.name].join("/"),
      expr: o.expr,
      bindings: o.bindings || {},
      // cel-spec's simple.proto: a case that names no result expects `true`.
      value: o.value === undefined ? { boolValue: true } : o.value,
      error: o.evalError !== undefined,
      disableCheck: !!o.disableCheck,
      container: o.container || "",
      typeEnv: (o.typeEnv || []).length > 0,
    });
  }
  for (const s of suite.suites || []) walk(section, s, [...path, s.name]);
}
for (const s of tests.suites) {
  if (SECTIONS.includes(s.name)) walk(s.name, s, [s.name]);
}
process.stdout.write(JSON.stringify(out));
