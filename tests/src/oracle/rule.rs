//! The reference evaluator's reading of a rule: each condition decided the
//! plain way, straight from the documentation, one subject at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use super::cel::{self, Scope, Truth};
use super::{Expressions, Group, Kind, Source, Subject, World};

pub struct Decider<'a> {
    world: &'a World,
    expressions: &'a Expressions,
    /// Groups decided so far: id → subject → source.
    decided: HashMap<String, BTreeMap<String, Source>>,
    /// Groups being decided, to report a cycle instead of overflowing.
    deciding: BTreeSet<String>,
}

impl<'a> Decider<'a> {
    pub fn new(world: &'a World, expressions: &'a Expressions) -> Decider<'a> {
        Decider {
            world,
            expressions,
            decided: HashMap::new(),
            deciding: BTreeSet::new(),
        }
    }

    fn group(&self, id: &str) -> &'a Group {
        self.world
            .groups
            .iter()
            .find(|g| g.id == id)
            .unwrap_or_else(|| panic!("a rule refers to group {id}, which does not exist"))
    }

    /// The members of group `id`, deciding the groups it refers to first.
    pub fn members(
        &mut self,
        id: &str,
        manual: &BTreeMap<String, BTreeSet<String>>,
    ) -> &BTreeMap<String, Source> {
        if !self.decided.contains_key(id) {
            assert!(
                self.deciding.insert(id.to_string()),
                "group {id} refers to itself through other groups"
            );
            let group = self.group(id);
            for r in references(group, self.world, self.expressions) {
                self.members(&r, manual);
            }
            let decided = self.decide(group, manual);
            self.deciding.remove(id);
            self.decided.insert(id.to_string(), decided);
        }
        &self.decided[id]
    }

    fn decide(
        &self,
        group: &Group,
        manual: &BTreeMap<String, BTreeSet<String>>,
    ) -> BTreeMap<String, Source> {
        let by_hand = manual.get(&group.id).cloned().unwrap_or_default();
        let mut out = BTreeMap::new();
        for s in self.world.subjects(group.kind) {
            if !group.dynamic {
                if by_hand.contains(&s.id) {
                    out.insert(s.id.clone(), "manual");
                }
                continue;
            }
            // docs/groups.md, "What decides membership", in its order.
            let source = match group.exemptions.get(&s.id).map(String::as_str) {
                Some("never") => None,
                Some("always") if self.admitted(group, s) => Some("exemption"),
                _ if by_hand.contains(&s.id) => Some("manual"),
                // In review mode the rule only suggests; nothing was accepted.
                _ if group.review => None,
                _ => self.by_rule(group, s).then_some("rule"),
            };
            if let Some(source) = source {
                out.insert(s.id.clone(), source);
            }
        }
        out
    }

    /// The pending suggestions of a group in review mode.
    pub fn suggestions(
        &mut self,
        group: &Group,
        manual: &BTreeMap<String, BTreeSet<String>>,
    ) -> BTreeMap<String, String> {
        let by_hand = manual.get(&group.id).cloned().unwrap_or_default();
        self.members(&group.id, manual);
        let mut out = BTreeMap::new();
        for s in self.world.subjects(group.kind) {
            let decided_otherwise = match group.exemptions.get(&s.id).map(String::as_str) {
                Some("never") => true,
                Some("always") => self.admitted(group, s),
                _ => false,
            } || by_hand.contains(&s.id);
            if !decided_otherwise && self.by_rule(group, s) {
                out.insert(s.id.clone(), "add".to_string());
            }
        }
        out
    }

    fn admitted(&self, group: &Group, s: &Subject) -> bool {
        group.kind == Kind::Device || group.member_states.iter().any(|st| st == s.state())
    }

    /// The rule matches, the exclusion does not, and the state is admitted.
    fn by_rule(&self, group: &Group, s: &Subject) -> bool {
        let rule = group.rule.as_ref().expect("a dynamic group has a rule");
        self.admitted(group, s)
            && self.rule(rule, group.kind, s)
            && !group
                .exclusion
                .as_ref()
                .is_some_and(|e| self.rule(e, group.kind, s))
    }

    /// `conditions` (all), `any` (one block), `expression`: each present
    /// part must hold.
    fn rule(&self, rule: &Value, kind: Kind, s: &Subject) -> bool {
        let conditions = rule.get("conditions").and_then(Value::as_array);
        let blocks = rule.get("any").and_then(Value::as_array);
        let expression = rule.get("expression").and_then(Value::as_str);
        conditions.is_none_or(|cs| cs.iter().all(|c| self.condition(c, kind, s)))
            && blocks.is_none_or(|bs| bs.iter().any(|b| self.rule(b, kind, s)))
            && expression.is_none_or(|e| self.expression(e, kind, s))
    }

    fn expression(&self, source: &str, kind: Kind, s: &Subject) -> bool {
        let scope = Related {
            decider: self,
            kind,
        };
        cel::eval(self.expressions.get(source), s, None, &scope) == Truth::True
    }

    fn condition(&self, c: &Value, kind: Kind, s: &Subject) -> bool {
        if let Some(g) = c.get("member_of").and_then(Value::as_str) {
            return self.decided[g].contains_key(&s.id);
        }
        if let Some(g) = c.get("not_member_of").and_then(Value::as_str) {
            return !self.decided[g].contains_key(&s.id);
        }
        if let Some(e) = c.get("expression").and_then(Value::as_str) {
            return self.expression(e, kind, s);
        }
        for (key, other) in [("devices", Kind::Device), ("users", Kind::User)] {
            if let Some(inner) = c.get(key) {
                let related = self.related(kind, s);
                let matching = related
                    .iter()
                    .filter(|r| self.rule(inner, other, r))
                    .count();
                return match inner.get("quantifier").and_then(Value::as_str) {
                    None | Some("any") => matching > 0,
                    Some("all") => !related.is_empty() && matching == related.len(),
                    Some("none") => matching == 0,
                    Some(q) => panic!("unknown quantifier {q}"),
                };
            }
        }
        let attribute = c["attribute"].as_str().expect("attribute");
        let ty = self
            .world
            .schema
            .get(&(kind, attribute.to_string()))
            .unwrap_or_else(|| panic!("unknown attribute {attribute}"));
        attribute_condition(ty, s.attrs.get(attribute), c)
    }

    /// The subjects bound to `s`.
    fn related(&self, kind: Kind, s: &Subject) -> Vec<&'a Subject> {
        let world = self.world;
        match kind {
            Kind::User => world
                .devices
                .iter()
                .filter(|d| world.links.contains(&(s.id.clone(), d.id.clone())))
                .collect(),
            Kind::Device => world
                .users
                .iter()
                .filter(|u| world.links.contains(&(u.id.clone(), s.id.clone())))
                .collect(),
        }
    }
}

struct Related<'d, 'a> {
    decider: &'d Decider<'a>,
    kind: Kind,
}

impl Scope for Related<'_, '_> {
    fn related(&self, subject: &Subject) -> Vec<&Subject> {
        self.decider.related(self.kind, subject)
    }
    fn in_group(&self, name: &str, subject: &Subject) -> bool {
        let g = self
            .decider
            .world
            .groups
            .iter()
            .find(|g| g.name.to_lowercase() == name.to_lowercase() || g.id == name)
            .unwrap_or_else(|| panic!("in_group names no group: {name}"));
        self.decider.decided[&g.id].contains_key(&subject.id)
    }
}

/// The groups a group's rule and exclusion refer to.
fn references(group: &Group, world: &World, expressions: &Expressions) -> Vec<String> {
    fn walk(v: &Value, world: &World, expressions: &Expressions, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("member_of" | "not_member_of", Value::String(id)) => out.push(id.clone()),
                        ("expression", Value::String(src)) => {
                            in_groups(expressions.get(src), world, out)
                        }
                        _ => walk(x, world, expressions, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, world, expressions, out)),
            _ => {}
        }
    }
    fn in_groups(c: &cel::Cel, world: &World, out: &mut Vec<String>) {
        use cel::Cel::*;
        match c {
            InGroup(name) => out.extend(
                world
                    .groups
                    .iter()
                    .filter(|g| g.name.to_lowercase() == name.to_lowercase() || &g.id == name)
                    .map(|g| g.id.clone()),
            ),
            And(a, b) | Or(a, b) => {
                in_groups(a, world, out);
                in_groups(b, world, out);
            }
            Not(a) | Exists(a) | All(a) => in_groups(a, world, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for r in [&group.rule, &group.exclusion].into_iter().flatten() {
        walk(r, world, expressions, &mut out);
    }
    out
}

/// One attribute condition, per docs/rules-standard.md.
pub fn attribute_condition(ty: &str, value: Option<&Value>, c: &Value) -> bool {
    let op = c["operator"].as_str().expect("operator");
    match op {
        "exists" => return value.is_some(),
        "not_exists" => return value.is_none(),
        _ => {}
    }
    // A missing attribute satisfies nothing else, not even `not_equals`.
    let Some(value) = value else {
        return false;
    };
    let wanted: Vec<&Value> = c["values"].as_array().expect("values").iter().collect();
    let fold = c["ignore_case"].as_bool().unwrap_or(false);
    match ty {
        "string" | "string_list" => {
            let elements: Vec<&str> = match value {
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                other => vec![other.as_str().expect("a text attribute")],
            };
            let texts: Vec<&str> = wanted.iter().map(|w| w.as_str().expect("text")).collect();
            let one = |element: &str, w: &str, how: &str| -> bool {
                if how == "matches" {
                    let pattern = if fold {
                        format!("(?i){w}")
                    } else {
                        w.to_string()
                    };
                    return regex::Regex::new(&pattern)
                        .expect("a valid pattern")
                        .is_match(element);
                }
                let (e, w) = if fold {
                    (element.to_lowercase(), w.to_lowercase())
                } else {
                    (element.to_string(), w.to_string())
                };
                match how {
                    "equals" => e == w,
                    "starts_with" => e.starts_with(&w),
                    "ends_with" => e.ends_with(&w),
                    "contains" => e.contains(&w),
                    other => panic!("no text test {other}"),
                }
            };
            let any = |how: &str| {
                elements
                    .iter()
                    .any(|e| texts.iter().any(|w| one(e, w, how)))
            };
            match op {
                "equals" | "in" => any("equals"),
                "not_equals" | "not_in" => !any("equals"),
                "starts_with" | "ends_with" | "contains" | "matches" => any(op),
                "not_contains" => !any("contains"),
                other => panic!("operator {other} on text"),
            }
        }
        "number" => {
            let number = |v: &Value| match v {
                Value::String(s) => s.trim().parse::<f64>().expect("a number"),
                other => other.as_f64().expect("a number"),
            };
            let x = number(value);
            let ws: Vec<f64> = wanted.iter().map(|w| number(w)).collect();
            ordered(op, ws.iter().map(|w| x.partial_cmp(w).expect("finite")))
        }
        "boolean" => {
            let boolean = |v: &Value| match v {
                Value::String(s) => s == "true",
                other => other.as_bool().expect("a boolean"),
            };
            let x = boolean(value);
            let hit = wanted.iter().any(|w| boolean(w) == x);
            match op {
                "equals" | "in" => hit,
                "not_equals" | "not_in" => !hit,
                other => panic!("operator {other} on a boolean"),
            }
        }
        "date" => {
            let x = millis(value.as_str().expect("a date"));
            let ws: Vec<i64> = wanted
                .iter()
                .map(|w| millis(w.as_str().expect("a date")))
                .collect();
            ordered(op, ws.iter().map(|w| x.cmp(w)))
        }
        other => panic!("attribute type {other}"),
    }
}

/// `equals` / `not_equals` / `less_than` / `greater_than` from the
/// comparisons of the value with each wanted value.
fn ordered(op: &str, mut cmps: impl Iterator<Item = std::cmp::Ordering>) -> bool {
    use std::cmp::Ordering::*;
    match op {
        "equals" | "in" => cmps.any(|o| o == Equal),
        "not_equals" | "not_in" => cmps.all(|o| o != Equal),
        "less_than" => cmps.next() == Some(Less),
        "greater_than" => cmps.next() == Some(Greater),
        other => panic!("operator {other} on an ordered type"),
    }
}

/// A date (`YYYY-MM-DD`, midnight UTC) or a date-time, to the millisecond.
fn millis(s: &str) -> i64 {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_millis();
    }
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("the reference evaluator reads no date like {s:?}: {e}"))
        .with_timezone(&Utc)
        .timestamp_millis()
}
