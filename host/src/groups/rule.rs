//! The rule language of dynamic groups as the host sees it.
//!
//! Attribute conditions are the evaluator's business (`rules-standard`
//! checks and evaluates them); the host only needs their attribute names, to
//! know what a rule reads. What the host adds on top are the conditions no
//! evaluator can answer from one subject's attributes: membership of another
//! group, and conditions on the related subjects (a user's devices, a
//! device's users). Before evaluation the host computes those as synthetic
//! boolean attributes and rewrites the condition into an ordinary `exists`
//! (or `not_exists`) on that attribute, at the same position, so the
//! evaluator's error positions and explanations line up with what the admin
//! wrote. The host sends a synthetic attribute only for subjects where it
//! holds: most subjects are in few of the groups rules refer to, and a batch
//! stays small.
//!
//! CEL expressions (`{"expression": "..."}`, as a condition or next to the
//! conditions) are the host's too: compiled against the schema
//! ([`RuleModel::bind`]), evaluated by the host over each subject, and handed
//! to the evaluator the same way, as a synthetic attribute.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::directory::{AttrType, Attribute, SubjectKind};
use crate::error::DomainError;
use crate::expression::{Environment, Expression};
use crate::limits::MAX_RULE_CONDITIONS;

/// Prefix of synthetic attributes; real attribute names cannot contain `$`.
const SYNTHETIC: &str = "$";

/// How a cross-subject condition combines the related subjects' results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Quantifier {
    /// At least one related subject matches.
    Any,
    /// There is at least one related subject, and every one matches.
    All,
    /// No related subject matches (true when there are none).
    None,
}

impl Quantifier {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "any" => Some(Quantifier::Any),
            "all" => Some(Quantifier::All),
            "none" => Some(Quantifier::None),
            _ => None,
        }
    }

    /// Combines per-related-subject results.
    pub fn combine(self, results: impl Iterator<Item = bool>) -> bool {
        let mut seen = false;
        for r in results {
            match (self, r) {
                (Quantifier::Any, true) => return true,
                (Quantifier::All, false) => return false,
                (Quantifier::None, true) => return false,
                _ => {}
            }
            seen = true;
        }
        match self {
            Quantifier::Any => false,
            Quantifier::All => seen,
            Quantifier::None => true,
        }
    }

    /// The word used in explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantifier::Any => "any",
            Quantifier::All => "all",
            Quantifier::None => "none",
        }
    }
}

/// A parsed rule: an OR of AND blocks (a plain `conditions` list is one block).
#[derive(Clone, Debug)]
pub struct RuleModel {
    /// Written as `{"any": [...]}` rather than `{"conditions": [...]}`.
    pub any: bool,
    /// The blocks, each a list of conditions.
    pub blocks: Vec<Vec<Cond>>,
}

/// One condition of a block.
#[derive(Clone, Debug)]
pub enum Cond {
    /// An attribute condition, passed to the evaluator as written.
    Attr {
        /// The condition's JSON.
        raw: Value,
        /// The attribute it reads.
        attribute: String,
    },
    /// Membership (or not) of another group of the same subject kind.
    Member {
        /// The referenced group.
        group: Uuid,
        /// `not_member_of`.
        negate: bool,
    },
    /// A CEL expression.
    Expr {
        /// Where it was written in the rule: `/conditions/2/expression`, or
        /// `/expression` next to the conditions.
        at: String,
        /// The source.
        source: String,
        /// Inside a condition on related subjects: then the expression is
        /// about a related subject, and sees its attributes only.
        nested: bool,
        /// The compiled expression, once bound ([`RuleModel::bind`]).
        compiled: Option<Arc<Expression>>,
    },
    /// A condition on the related subjects.
    Related {
        /// The related subjects' kind: devices for a user rule, users for a
        /// device rule.
        kind: SubjectKind,
        /// How the related subjects' results combine.
        quantifier: Quantifier,
        /// The rule each related subject is tested against.
        rule: RuleModel,
    },
}

/// A group a rule refers to, with the kind it must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    /// The referenced group.
    pub group: Uuid,
    /// The kind of subjects the referenced group must hold.
    pub kind: SubjectKind,
}

/// A non-fatal finding about a rule, kept on the group's status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Warning {
    /// Where: `rule/conditions/1`, or `rule` for the whole rule.
    pub field: String,
    /// What is odd about it.
    pub message: String,
}

/// The JSON pointer of a condition in the rule as written.
pub fn condition_pointer(any: bool, block: usize, condition: usize) -> String {
    if any {
        format!("/any/{block}/conditions/{condition}")
    } else {
        format!("/conditions/{condition}")
    }
}

impl RuleModel {
    /// Parses a rule about subjects of `kind`; `field` (`rule`, `exclusion`)
    /// prefixes every error position.
    /// At most [`MAX_RULE_CONDITIONS`] conditions, counting those of
    /// conditions on related subjects. The rule language nests only one
    /// level (related subjects cannot have related subjects of their own),
    /// so the parser's recursion is bounded by its shape; the JSON it reads
    /// was bounded by [`crate::limits::MAX_JSON_DEPTH`] when the body was.
    pub fn parse(value: &Value, kind: SubjectKind, field: &str) -> Result<RuleModel, DomainError> {
        let model = parse_rule(value, kind, field, false)?;
        let count = model.count();
        if count > MAX_RULE_CONDITIONS {
            return Err(DomainError::Limit {
                code: "too_many",
                field: field.to_string(),
                message: format!(
                    "the rule has {count} conditions; the limit is {MAX_RULE_CONDITIONS}"
                ),
            });
        }
        Ok(model)
    }

    /// Conditions in every block, those on related subjects included.
    fn count(&self) -> usize {
        self.blocks
            .iter()
            .flatten()
            .map(|c| match c {
                Cond::Related { rule, .. } => 1 + rule.count(),
                _ => 1,
            })
            .sum()
    }

    /// Every condition with its pointer.
    pub fn conditions(&self) -> impl Iterator<Item = (String, &Cond)> {
        self.blocks.iter().enumerate().flat_map(move |(b, block)| {
            block
                .iter()
                .enumerate()
                .map(move |(c, cond)| (condition_pointer(self.any, b, c), cond))
        })
    }

    /// The attributes of the rule's own subjects it reads, and those of the
    /// related subjects.
    pub fn reads(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut own, mut related) = (BTreeSet::new(), BTreeSet::new());
        for (_, cond) in self.conditions() {
            match cond {
                Cond::Attr { attribute, .. } => {
                    own.insert(attribute.clone());
                }
                Cond::Member { .. } => {}
                Cond::Related { rule, .. } => related.extend(rule.reads().0),
                Cond::Expr {
                    compiled: Some(e),
                    nested,
                    ..
                } => {
                    let r = e.reads();
                    if *nested {
                        own.extend(r.related.iter().cloned());
                    } else {
                        own.extend(r.own.iter().cloned());
                        related.extend(r.related.iter().cloned());
                    }
                }
                Cond::Expr { compiled: None, .. } => {}
            }
        }
        (own, related)
    }

    /// The CEL expressions of the rule, nested ones included.
    pub fn expressions(&self) -> Vec<&Cond> {
        let mut out = Vec::new();
        for (_, cond) in self.conditions() {
            match cond {
                Cond::Expr { .. } => out.push(cond),
                Cond::Related { rule, .. } => out.extend(rule.expressions()),
                _ => {}
            }
        }
        out
    }

    /// The rule's only condition, when it is a single expression: its
    /// position and the compiled expression.
    pub fn single_expression(&self) -> Option<(&str, &Arc<Expression>)> {
        match self.blocks.as_slice() {
            [block] => match block.as_slice() {
                [
                    Cond::Expr {
                        at,
                        compiled: Some(e),
                        nested: false,
                        ..
                    },
                ] => Some((at, e)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether a top-level expression reads the related subjects.
    pub fn expression_reads_related(&self) -> bool {
        self.conditions().any(|(_, c)| {
            matches!(c, Cond::Expr { compiled: Some(e), nested: false, .. } if e.reads().reads_related)
        })
    }

    /// Compiles the rule's CEL expressions against the schema; `kind` is the
    /// rule's subject kind and `field` prefixes error positions.
    pub fn bind(
        &mut self,
        kind: SubjectKind,
        field: &str,
        ctx: &ExpressionContext,
    ) -> Result<(), DomainError> {
        let any = self.any;
        for (b, block) in self.blocks.iter_mut().enumerate() {
            for (c, cond) in block.iter_mut().enumerate() {
                match cond {
                    Cond::Expr {
                        at,
                        source,
                        nested,
                        compiled,
                    } => {
                        let names = |name: &str| ctx.group(kind, name);
                        let env = Environment {
                            kind,
                            users: &ctx.users,
                            devices: &ctx.devices,
                            group: &names,
                            related_only: *nested,
                        };
                        let key = (kind, *nested, source.clone());
                        if let Some(e) = ctx.cache.get(&key) {
                            *compiled = Some(e);
                            continue;
                        }
                        let e = Expression::compile(source, &env).map_err(|problems| {
                            let message = problems
                                .iter()
                                .map(|p| p.to_string())
                                .collect::<Vec<_>>()
                                .join("\n");
                            match problems.first().and_then(|p| p.limit) {
                                Some(code) => DomainError::Limit {
                                    code,
                                    field: format!("{field}{at}"),
                                    message,
                                },
                                None => DomainError::invalid_rule(format!("{field}{at}"), message),
                            }
                        })?;
                        let e = Arc::new(e);
                        ctx.cache.put(key, Arc::clone(&e));
                        *compiled = Some(e);
                    }
                    Cond::Related { kind: rk, rule, .. } => {
                        let rk = *rk;
                        let key = related_key(kind).0;
                        let at = format!("{field}{}/{key}", condition_pointer(any, b, c));
                        rule.bind(rk, &at, ctx)?;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The groups the rule refers to, directly or through related subjects.
    pub fn references(&self, kind: SubjectKind) -> BTreeSet<Reference> {
        let mut out = BTreeSet::new();
        for (_, cond) in self.conditions() {
            match cond {
                Cond::Member { group, .. } => {
                    out.insert(Reference {
                        group: *group,
                        kind,
                    });
                }
                Cond::Related { kind: rk, rule, .. } => out.extend(rule.references(*rk)),
                Cond::Expr {
                    compiled: Some(e), ..
                } => out.extend(e.reads().in_groups.iter().map(|g| Reference {
                    group: *g,
                    kind: e.kind(),
                })),
                Cond::Attr { .. } | Cond::Expr { .. } => {}
            }
        }
        out
    }

    /// Whether the rule has conditions on related subjects.
    pub fn has_related(&self) -> bool {
        self.conditions()
            .any(|(_, c)| matches!(c, Cond::Related { .. }))
    }

    /// The rule in the evaluator's language. `related` is called for each
    /// cross-subject condition and each expression, with its pointer, and
    /// returns the synthetic attribute that will hold its outcome.
    pub fn to_evaluator_text(&self, mut related: impl FnMut(&str, &Cond) -> String) -> String {
        let block_json =
            |b: usize, block: &Vec<Cond>, related: &mut dyn FnMut(&str, &Cond) -> String| {
                let conditions: Vec<Value> = block
                    .iter()
                    .enumerate()
                    .map(|(c, cond)| match cond {
                        Cond::Attr { raw, .. } => raw.clone(),
                        Cond::Member { group, negate } => json!({
                            "attribute": member_attribute(group),
                            "operator": if *negate { "not_exists" } else { "exists" },
                        }),
                        Cond::Related { .. } | Cond::Expr { .. } => json!({
                            "attribute": related(&condition_pointer(self.any, b, c), cond),
                            "operator": "exists",
                        }),
                    })
                    .collect();
                json!({ "conditions": conditions })
            };
        let value = if self.any {
            let blocks: Vec<Value> = self
                .blocks
                .iter()
                .enumerate()
                .map(|(b, block)| block_json(b, block, &mut related))
                .collect();
            json!({ "any": blocks })
        } else {
            block_json(0, &self.blocks[0], &mut related)
        };
        value.to_string()
    }

    /// Findings that do not stop the rule from being saved: blocks that can
    /// never match, and rules that match every subject.
    pub fn warnings(
        &self,
        field: &str,
        kind: SubjectKind,
        types: &BTreeMap<String, AttrType>,
    ) -> Vec<Warning> {
        let mut out = Vec::new();
        let mut never = 0;
        for (b, block) in self.blocks.iter().enumerate() {
            let at = if self.any {
                format!("{field}/any/{b}")
            } else {
                field.to_string()
            };
            if let Some(why) = block_never_matches(block, types) {
                never += 1;
                out.push(Warning {
                    field: at,
                    message: format!("can never match: {why}"),
                });
            } else if block_matches_everything(block, kind) {
                out.push(Warning {
                    field: at,
                    message: format!(
                        "matches every {}: its conditions only test attributes every {} has",
                        kind.as_str(),
                        kind.as_str()
                    ),
                });
            }
        }
        if self.any && never == self.blocks.len() && never > 1 {
            out.push(Warning {
                field: field.to_string(),
                message: "no block of this rule can ever match, so the group stays empty".into(),
            });
        }
        out
    }
}

/// The synthetic attribute holding "is a member of `group`".
pub fn member_attribute(group: &Uuid) -> String {
    format!("{SYNTHETIC}member:{group}")
}

/// The synthetic attribute holding the outcome of expression `n`.
pub fn expression_attribute(n: usize) -> String {
    format!("{SYNTHETIC}expr:{n}")
}

/// What expressions are compiled against: the schema, and the groups
/// `in_group(...)` may name.
#[derive(Clone, Debug, Default)]
pub struct ExpressionContext {
    /// Users' attributes.
    pub users: Vec<Attribute>,
    /// Devices' attributes.
    pub devices: Vec<Attribute>,
    /// `(kind, lowercased name)` → group.
    pub names: HashMap<(SubjectKind, String), Uuid>,
    /// Group → `(kind, name)`.
    pub groups: HashMap<Uuid, (SubjectKind, String)>,
    /// Expressions compiled against this same schema and these same names.
    pub cache: Arc<ExpressionCache>,
}

/// Compiled expressions, so that checking one group's references (which
/// parses every other group's rule) does not compile every expression again.
/// An entry holds for one schema and one set of group names: the cache is
/// emptied when either changes ([`ExpressionCache::prepare`]).
#[derive(Debug, Default)]
pub struct ExpressionCache {
    inner: parking_lot::Mutex<(u64, HashMap<ExpressionKey, Arc<Expression>>)>,
}

/// Whose expression, whether nested, its source.
type ExpressionKey = (SubjectKind, bool, String);

/// Entries kept at most; beyond, the cache starts over.
const MAX_CACHED_EXPRESSIONS: usize = 20_000;

impl ExpressionCache {
    /// Makes the cache hold for `ctx`'s schema and names, emptying it if
    /// they changed.
    pub fn prepare(&self, ctx: &ExpressionContext) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for a in ctx.users.iter().chain(&ctx.devices) {
            (&a.name, a.subject, a.attr_type as u8).hash(&mut h);
        }
        let mut names: Vec<(&Uuid, &(SubjectKind, String))> = ctx.groups.iter().collect();
        names.sort();
        names.hash(&mut h);
        let fingerprint = h.finish();
        let mut inner = self.inner.lock();
        if inner.0 != fingerprint {
            *inner = (fingerprint, HashMap::new());
        }
    }

    fn get(&self, key: &ExpressionKey) -> Option<Arc<Expression>> {
        self.inner.lock().1.get(key).cloned()
    }

    fn put(&self, key: ExpressionKey, e: Arc<Expression>) {
        let mut inner = self.inner.lock();
        if inner.1.len() >= MAX_CACHED_EXPRESSIONS {
            inner.1.clear();
        }
        inner.1.insert(key, e);
    }
}

impl ExpressionContext {
    /// The group of `kind` that `name_or_id` names.
    pub fn group(&self, kind: SubjectKind, name_or_id: &str) -> Option<Uuid> {
        if let Ok(id) = Uuid::parse_str(name_or_id) {
            return self.groups.get(&id).filter(|(k, _)| *k == kind).map(|_| id);
        }
        self.names.get(&(kind, name_or_id.to_lowercase())).copied()
    }
}

/// The synthetic attribute holding the outcome of cross-subject condition `n`.
pub fn related_attribute(n: usize) -> String {
    format!("{SYNTHETIC}related:{n}")
}

fn err(field: &str, at: &str, message: impl Into<String>) -> DomainError {
    DomainError::invalid_rule(format!("{field}{at}"), message)
}

fn parse_rule(
    value: &Value,
    kind: SubjectKind,
    field: &str,
    nested: bool,
) -> Result<RuleModel, DomainError> {
    let Value::Object(obj) = value else {
        return Err(err(
            field,
            "",
            "a rule is an object with `conditions` (all must hold) or `any` (a list of condition blocks)",
        ));
    };
    let allowed: &[&str] = if nested {
        &["conditions", "any", "quantifier", "expression"]
    } else {
        &["conditions", "any", "expression"]
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(
            field,
            &format!("/{k}"),
            format!("unknown key {k:?}; expected one of {}", allowed.join(", ")),
        ));
    }
    // An expression next to the conditions holds as well as they do: it
    // joins every block.
    let expression = match obj.get("expression") {
        None => None,
        Some(Value::String(source)) => Some(Cond::Expr {
            at: "/expression".into(),
            source: source.clone(),
            nested,
            compiled: None,
        }),
        Some(_) => {
            return Err(err(
                field,
                "/expression",
                "must be a CEL expression, as a string",
            ));
        }
    };
    let mut model = match (obj.get("conditions"), obj.get("any")) {
        (None, None) if expression.is_some() => Ok(RuleModel {
            any: false,
            blocks: vec![Vec::new()],
        }),
        (Some(Value::Array(c)), None) if c.is_empty() && expression.is_some() => Ok(RuleModel {
            any: false,
            blocks: vec![Vec::new()],
        }),
        (Some(conds), None) => Ok(RuleModel {
            any: false,
            blocks: vec![parse_block(conds, kind, field, "/conditions", nested)?],
        }),
        (None, Some(Value::Array(blocks))) => {
            if blocks.is_empty() {
                return Err(err(field, "/any", "needs at least one block"));
            }
            let mut out = Vec::with_capacity(blocks.len());
            for (b, block) in blocks.iter().enumerate() {
                let at = format!("/any/{b}");
                let Value::Object(bo) = block else {
                    return Err(err(field, &at, "a block is an object with `conditions`"));
                };
                if let Some(k) = bo.keys().find(|k| *k != "conditions") {
                    return Err(err(
                        field,
                        &format!("{at}/{k}"),
                        format!("unknown key {k:?}; a block has only `conditions`"),
                    ));
                }
                let conds = bo
                    .get("conditions")
                    .ok_or_else(|| err(field, &at, "a block needs `conditions`"))?;
                out.push(parse_block(
                    conds,
                    kind,
                    field,
                    &format!("{at}/conditions"),
                    nested,
                )?);
            }
            Ok(RuleModel {
                any: true,
                blocks: out,
            })
        }
        (None, Some(_)) => Err(err(field, "/any", "must be a list of blocks")),
        _ => Err(err(
            field,
            "",
            "a rule has exactly one of `conditions` and `any`, and may have an `expression`",
        )),
    }?;
    if let Some(e) = expression {
        for block in &mut model.blocks {
            block.push(e.clone());
        }
    }
    Ok(model)
}

fn parse_block(
    value: &Value,
    kind: SubjectKind,
    field: &str,
    at: &str,
    nested: bool,
) -> Result<Vec<Cond>, DomainError> {
    let Value::Array(items) = value else {
        return Err(err(field, at, "must be a list of conditions"));
    };
    if items.is_empty() {
        return Err(err(field, at, "needs at least one condition"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_condition(item, kind, field, &format!("{at}/{i}"), nested))
        .collect()
}

fn related_key(kind: SubjectKind) -> (&'static str, SubjectKind) {
    match kind {
        SubjectKind::User => ("devices", SubjectKind::Device),
        SubjectKind::Device => ("users", SubjectKind::User),
    }
}

fn parse_condition(
    value: &Value,
    kind: SubjectKind,
    field: &str,
    at: &str,
    nested: bool,
) -> Result<Cond, DomainError> {
    let Value::Object(obj) = value else {
        return Err(err(field, at, "a condition is an object"));
    };
    let (related_name, related_kind) = related_key(kind);
    let only = |obj: &Map<String, Value>, key: &str| -> Result<(), DomainError> {
        match obj.keys().find(|k| *k != key) {
            Some(k) => Err(err(
                field,
                &format!("{at}/{k}"),
                format!("unknown key {k:?} next to `{key}`"),
            )),
            None => Ok(()),
        }
    };
    for (key, negate) in [("member_of", false), ("not_member_of", true)] {
        if let Some(v) = obj.get(key) {
            only(obj, key)?;
            let group = v
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| err(field, &format!("{at}/{key}"), "must be a group id"))?;
            return Ok(Cond::Member { group, negate });
        }
    }
    if let Some(v) = obj.get("expression") {
        only(obj, "expression")?;
        let Value::String(source) = v else {
            return Err(err(
                field,
                &format!("{at}/expression"),
                "must be a CEL expression, as a string",
            ));
        };
        return Ok(Cond::Expr {
            at: format!("{at}/expression"),
            source: source.clone(),
            nested,
            compiled: None,
        });
    }
    let other_related = related_key(related_kind).0;
    if obj.contains_key(other_related) && !obj.contains_key(related_name) {
        return Err(err(
            field,
            &format!("{at}/{other_related}"),
            format!(
                "a rule about {}s can test their `{related_name}`, not `{other_related}`",
                kind.as_str()
            ),
        ));
    }
    if let Some(v) = obj.get(related_name) {
        only(obj, related_name)?;
        let at = format!("{at}/{related_name}");
        if nested {
            return Err(err(
                field,
                &at,
                "conditions on related subjects cannot be nested",
            ));
        }
        let quantifier = match v.get("quantifier") {
            None => Quantifier::Any,
            Some(q) => q.as_str().and_then(Quantifier::parse).ok_or_else(|| {
                err(
                    field,
                    &format!("{at}/quantifier"),
                    "must be \"any\", \"all\" or \"none\"",
                )
            })?,
        };
        let rule = parse_rule(v, related_kind, &format!("{field}{at}"), true)?;
        return Ok(Cond::Related {
            kind: related_kind,
            quantifier,
            rule,
        });
    }
    match obj.get("attribute") {
        Some(Value::String(a)) if a.starts_with(SYNTHETIC) => Err(err(
            field,
            &format!("{at}/attribute"),
            format!("unknown attribute {a:?}"),
        )),
        Some(Value::String(a)) => Ok(Cond::Attr {
            raw: value.clone(),
            attribute: a.clone(),
        }),
        Some(_) => Err(err(
            field,
            &format!("{at}/attribute"),
            "must be an attribute name",
        )),
        None => Err(err(
            field,
            at,
            format!(
                "a condition needs `attribute` (with `operator` and `values`), `member_of`, \
                 `not_member_of`, `{related_name}` or `expression`"
            ),
        )),
    }
}

/// Attributes every subject of a kind has.
fn always_present(kind: SubjectKind) -> &'static [&'static str] {
    match kind {
        SubjectKind::User => &[
            "id",
            "username",
            "email",
            "state",
            "created_at",
            "updated_at",
        ],
        SubjectKind::Device => &["id", "hostname", "os_family", "created_at", "updated_at"],
    }
}

fn attr_parts(raw: &Value) -> (&str, &str, Vec<&Value>, bool) {
    let s = |k: &str| raw.get(k).and_then(Value::as_str).unwrap_or("");
    let values = raw
        .get("values")
        .and_then(Value::as_array)
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let ignore_case = raw
        .get("ignore_case")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    (s("attribute"), s("operator"), values, ignore_case)
}

fn block_never_matches(block: &[Cond], types: &BTreeMap<String, AttrType>) -> Option<String> {
    // Single-valued attribute required to equal values from disjoint sets.
    let mut required: BTreeMap<&str, (usize, BTreeSet<String>)> = BTreeMap::new();
    let mut exists: BTreeSet<&str> = BTreeSet::new();
    let mut not_exists: BTreeSet<&str> = BTreeSet::new();
    let mut member: BTreeMap<Uuid, bool> = BTreeMap::new();
    for (i, cond) in block.iter().enumerate() {
        match cond {
            Cond::Attr { raw, .. } => {
                let (attr, op, values, ignore_case) = attr_parts(raw);
                match op {
                    "exists" => {
                        exists.insert(attr);
                    }
                    "not_exists" => {
                        not_exists.insert(attr);
                    }
                    "equals" | "in" => {
                        let single = types.get(attr).is_some_and(|t| *t != AttrType::StringList);
                        if !single {
                            continue;
                        }
                        let set: BTreeSet<String> = values
                            .iter()
                            .map(|v| match v {
                                Value::String(s) if ignore_case => s.to_lowercase(),
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect();
                        if let Some((j, prev)) = required.get(attr) {
                            let disjoint = if ignore_case {
                                prev.iter()
                                    .all(|p| !set.iter().any(|s| s.eq_ignore_ascii_case(p)))
                            } else {
                                prev.is_disjoint(&set)
                            };
                            if disjoint {
                                return Some(format!(
                                    "conditions {j} and {i} require {attr} to be one of {prev:?} \
                                     and one of {set:?} at once, and {attr} has a single value"
                                ));
                            }
                        } else {
                            required.insert(attr, (i, set));
                        }
                    }
                    _ => {}
                }
            }
            Cond::Member { group, negate } => {
                if member.insert(*group, !negate) == Some(*negate) {
                    return Some(format!(
                        "it requires membership of group {group} and its absence at once"
                    ));
                }
            }
            Cond::Related { .. } | Cond::Expr { .. } => {}
        }
    }
    let positive: BTreeSet<&str> = exists
        .iter()
        .copied()
        .chain(required.keys().copied())
        .collect();
    not_exists
        .intersection(&positive)
        .next()
        .map(|attr| format!("it requires {attr} to be both present and missing"))
}

fn block_matches_everything(block: &[Cond], kind: SubjectKind) -> bool {
    block.iter().all(|cond| match cond {
        Cond::Attr { raw, .. } => {
            let (attr, op, ..) = attr_parts(raw);
            op == "exists" && always_present(kind).contains(&attr)
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> BTreeMap<String, AttrType> {
        [
            ("department".to_string(), AttrType::String),
            ("tags".to_string(), AttrType::StringList),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn parses_every_condition_form_and_rewrites_them_in_place() {
        let g = Uuid::now_v7();
        let rule = json!({"any": [
            {"conditions": [{"attribute": "department", "operator": "equals", "values": ["Eng"]},
                            {"not_member_of": g.to_string()}]},
            {"conditions": [{"devices": {"quantifier": "all", "conditions": [
                {"attribute": "os_family", "operator": "equals", "values": ["macos"]}]}}]}
        ]});
        let m = RuleModel::parse(&rule, SubjectKind::User, "rule").unwrap();
        assert_eq!(m.blocks.len(), 2);
        let (own, related) = m.reads();
        assert_eq!(own.into_iter().collect::<Vec<_>>(), ["department"]);
        assert_eq!(related.into_iter().collect::<Vec<_>>(), ["os_family"]);
        let mut seen = Vec::new();
        let text = m.to_evaluator_text(|at, _| {
            seen.push(at.to_string());
            related_attribute(0)
        });
        assert_eq!(seen, ["/any/1/conditions/0"]);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["any"][0]["conditions"][1],
            json!({"attribute": member_attribute(&g), "operator": "not_exists"})
        );
        assert_eq!(v["any"][1]["conditions"][0]["attribute"], "$related:0");
    }

    #[test]
    fn errors_name_the_position() {
        let cases = [
            (
                json!({"conditions": [{"member_of": "nope"}]}),
                "rule/conditions/0/member_of",
            ),
            (
                json!({"conditions": [{"users": {"conditions": []}}]}),
                "rule/conditions/0/users",
            ),
            (
                json!({"any": [{"conditions": [{"operator": "x"}]}]}),
                "rule/any/0/conditions/0",
            ),
            (
                json!({"conditions": [{"devices": {"conditions": [{"users": {"conditions": [{"attribute": "a"}]}}]}}]}),
                "rule/conditions/0/devices/conditions/0/users",
            ),
            (json!({"conditions": [], "any": []}), "rule"),
            (
                json!({"conditions": [{"attribute": "$member:x"}]}),
                "rule/conditions/0/attribute",
            ),
        ];
        for (rule, field) in cases {
            match RuleModel::parse(&rule, SubjectKind::User, "rule") {
                Err(DomainError::InvalidRule { field: f, .. }) => assert_eq!(f, field, "{rule}"),
                other => panic!("{rule}: {other:?}"),
            }
        }
    }

    #[test]
    fn warns_about_contradictions_and_tautologies() {
        let rule = json!({"any": [
            {"conditions": [{"attribute": "department", "operator": "equals", "values": ["A"]},
                            {"attribute": "department", "operator": "equals", "values": ["B"]}]},
            {"conditions": [{"attribute": "tags", "operator": "equals", "values": ["A"]},
                            {"attribute": "tags", "operator": "equals", "values": ["B"]}]},
            {"conditions": [{"attribute": "username", "operator": "exists"}]}
        ]});
        let m = RuleModel::parse(&rule, SubjectKind::User, "rule").unwrap();
        let w = m.warnings("rule", SubjectKind::User, &types());
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].field, "rule/any/0");
        assert!(w[0].message.contains("never"));
        assert_eq!(w[1].field, "rule/any/2");
        assert!(w[1].message.contains("every user"));
    }

    #[test]
    fn quantifiers_are_explicit_about_empty_sets() {
        assert!(!Quantifier::Any.combine([].into_iter()));
        assert!(!Quantifier::All.combine([].into_iter()));
        assert!(Quantifier::None.combine([].into_iter()));
        assert!(Quantifier::All.combine([true, true].into_iter()));
        assert!(!Quantifier::All.combine([true, false].into_iter()));
        assert!(Quantifier::Any.combine([false, true].into_iter()));
        assert!(!Quantifier::None.combine([false, true].into_iter()));
    }
}
