//! Compiling a rule's CEL expressions against the schema and the groups
//! `in_group(...)` may name, with a cache so that a rule is not compiled again
//! each time another group's references are checked.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::parse::related_key;
use super::{Cond, RuleModel, condition_pointer};
use crate::directory::{Attribute, SubjectKind};
use crate::error::DomainError;
use crate::expression::{Environment, Expression};

impl RuleModel {
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
