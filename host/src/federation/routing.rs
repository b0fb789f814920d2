//! Routing: which way a user signs in. An ordered list of rules, each a
//! condition and a target (an IdP, or local sign-in); the first rule that
//! matches wins, and a default covers everyone else. The list is one
//! document, replaced as a whole, so an admin reorders rules in one atomic
//! change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::layout::ROUTING;
use crate::audit::{self, Record};
use crate::auth::{ManagePlugins, Mutation};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

use crate::directory::{AttrRef, AttrType, Attribute, Subject, SubjectKind, User};
use crate::error::DomainError;
use crate::expression::{Bindings, Environment, Expression, Related, Runtime};
use crate::groups::read as groups;

/// The single routing document's key.
const CURRENT: &[u8] = b"current";
use crate::limits::{MAX_ROUTING_DOMAINS, MAX_ROUTING_RULES as MAX_RULES};

/// Where a sign-in goes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// An identity provider.
    Idp {
        /// The IdP.
        idp_id: Uuid,
    },
    /// The user's local password.
    Local,
}

/// When a rule applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// The user is a member of this user group.
    Group(Uuid),
    /// The identifier (or the user's email) is at one of these domains.
    EmailDomain(Vec<String>),
    /// A CEL expression over the user (`user.department == 'Sales' &&
    /// in_group('Pilot')`), checked against the attribute schema when the
    /// routing is saved. It sees the user's attributes and groups, not
    /// their devices. An identifier that names no user matches no
    /// expression.
    Expression(String),
}

/// One routing rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// For admins and the audit trail.
    pub name: String,
    /// When it applies.
    pub condition: Condition,
    /// Where it sends the user.
    pub target: Target,
}

/// The routing document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Routing {
    /// Tried in order; the first match wins.
    pub rules: Vec<Rule>,
    /// Where everyone else goes.
    pub default: Target,
    /// User groups whose members may not sign in with a local password,
    /// whatever routing says (for example everyone who must use the IdP's
    /// MFA).
    #[serde(default)]
    pub local_sign_in_disabled_for: Vec<Uuid>,
    /// When it last changed (null until first set).
    pub updated_at: Option<DateTime<Utc>>,
    /// Increments on every change; the ETag.
    pub version: u64,
}

impl Default for Routing {
    /// Until an admin says otherwise, everyone signs in locally.
    fn default() -> Self {
        Routing {
            rules: Vec::new(),
            default: Target::Local,
            local_sign_in_disabled_for: Vec::new(),
            updated_at: None,
            version: 0,
        }
    }
}

/// The writable part of the routing document.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingInput {
    /// Tried in order.
    pub rules: Vec<Rule>,
    /// Where everyone else goes.
    pub default: Target,
    /// User groups whose members may not use a local password.
    #[serde(default)]
    pub local_sign_in_disabled_for: Vec<Uuid>,
}

/// Which way an identifier signs in, and why.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Route {
    /// The directory user the identifier names, if any.
    pub user_id: Option<Uuid>,
    /// The rule that matched, by position; none when the default applied.
    pub rule: Option<usize>,
    /// Its name.
    pub rule_name: Option<String>,
    /// Where the sign-in goes.
    pub target: Target,
}

/// A domain as rules compare it: lowercase, without a leading `@`.
fn normalize_domain(d: &str) -> String {
    d.trim().trim_start_matches('@').to_lowercase()
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// The routing document as stored, or the default.
pub(crate) fn load(r: &impl cohort_storage::Reader) -> Result<Routing, DomainError> {
    Ok(r.get_json(ROUTING, CURRENT)?.unwrap_or_default())
}

/// Checks and stores a new routing document.
pub(crate) fn replace(
    txn: &mut cohort_storage::WriteTxn<'_>,
    cap: &ManagePlugins<'_>,
    now: DateTime<Utc>,
    users: &[Attribute],
    input: RoutingInput,
    if_match: Option<u64>,
) -> Result<Routing, DomainError> {
    let before = load(&*txn)?;
    if let Some(v) = if_match
        && v != before.version
    {
        return Err(DomainError::VersionMismatch {
            current: before.version,
        });
    }
    if input.rules.len() > MAX_RULES {
        return Err(DomainError::Limit {
            code: "too_many",
            field: "rules".into(),
            message: format!("{} rules; the limit is {MAX_RULES}", input.rules.len()),
        });
    }
    let check_target = |txn: &cohort_storage::WriteTxn<'_>, field: String, t: &Target| {
        if let Target::Idp { idp_id } = t
            && !super::provider::exists(txn, idp_id)?
        {
            return Err(DomainError::invalid(
                format!("{field}/idp_id"),
                format!("no identity provider with id {idp_id}"),
            ));
        }
        Ok(())
    };
    let mut rules = Vec::with_capacity(input.rules.len());
    for (i, rule) in input.rules.into_iter().enumerate() {
        let at = format!("rules/{i}");
        if rule.name.trim().is_empty() || rule.name.chars().count() > 100 {
            return Err(DomainError::invalid(
                format!("{at}/name"),
                "must be 1-100 characters",
            ));
        }
        check_target(txn, format!("{at}/target"), &rule.target)?;
        let condition = match rule.condition {
            Condition::Group(g) => {
                check_user_group(txn, format!("{at}/condition/group"), &g)?;
                Condition::Group(g)
            }
            Condition::Expression(source) => {
                compile_expression(&*txn, users, &source).map_err(|(limit, message)| {
                    let field = format!("{at}/condition/expression");
                    match limit {
                        Some(code) => DomainError::Limit {
                            code,
                            field,
                            message,
                        },
                        None => DomainError::invalid(field, message),
                    }
                })?;
                Condition::Expression(source)
            }
            Condition::EmailDomain(domains) => {
                if domains.is_empty() {
                    return Err(DomainError::invalid(
                        format!("{at}/condition/email_domain"),
                        "needs at least one domain",
                    ));
                }
                if domains.len() > MAX_ROUTING_DOMAINS {
                    return Err(DomainError::Limit {
                        code: "too_many",
                        field: format!("{at}/condition/email_domain"),
                        message: format!(
                            "{} domains; the limit is {MAX_ROUTING_DOMAINS}",
                            domains.len()
                        ),
                    });
                }
                let mut out = Vec::with_capacity(domains.len());
                for (j, d) in domains.iter().enumerate() {
                    let n = normalize_domain(d);
                    if !valid_domain(&n) {
                        return Err(DomainError::invalid(
                            format!("{at}/condition/email_domain/{j}"),
                            format!("{d:?} is not a domain name such as example.com"),
                        ));
                    }
                    out.push(n);
                }
                Condition::EmailDomain(out)
            }
        };
        rules.push(Rule {
            name: rule.name,
            condition,
            target: rule.target,
        });
    }
    check_target(txn, "default".into(), &input.default)?;
    for (i, g) in input.local_sign_in_disabled_for.iter().enumerate() {
        check_user_group(txn, format!("local_sign_in_disabled_for/{i}"), g)?;
    }
    let after = Routing {
        rules,
        default: input.default,
        local_sign_in_disabled_for: input.local_sign_in_disabled_for,
        updated_at: Some(now),
        version: before.version + 1,
    };
    txn.put_json(ROUTING, CURRENT, &after)?;
    audit::record(
        txn,
        now,
        cap.actor(),
        Record {
            action: "routing.update",
            resource_type: "routing",
            resource_id: "current".into(),
            changes: audit::diff(Some(&before), Some(&after)),
        },
    )?;
    Ok(after)
}

/// Where routing uses group `id` (a rule's condition, or the groups
/// without local sign-in), so that the group is not deleted from under it.
pub(crate) fn uses_group(
    r: &impl cohort_storage::Reader,
    id: &Uuid,
) -> Result<Option<String>, DomainError> {
    let routing = load(r)?;
    if let Some(rule) = routing
        .rules
        .iter()
        .find(|rule| matches!(&rule.condition, Condition::Group(g) if g == id))
    {
        return Ok(Some(format!("rule {:?}", rule.name)));
    }
    if routing.local_sign_in_disabled_for.contains(id) {
        return Ok(Some("local_sign_in_disabled_for".into()));
    }
    Ok(None)
}

/// Refuses anything but an existing user group.
fn check_user_group(
    txn: &cohort_storage::WriteTxn<'_>,
    field: String,
    g: &Uuid,
) -> Result<(), DomainError> {
    let group = groups::group(txn, g)?;
    match group {
        None => Err(DomainError::invalid(field, format!("no group with id {g}"))),
        Some(group) if group.subject != SubjectKind::User => Err(DomainError::invalid(
            field,
            format!(
                "{:?} is a device group; routing needs a user group",
                group.name
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// The directory user an identifier (username or email) names.
pub(crate) fn find_user(
    r: &impl cohort_storage::Reader,
    identifier: &str,
) -> Result<Option<User>, DomainError> {
    Ok(crate::directory::read::user_by_identifier(r, identifier)?)
}

/// Compiles a routing expression against the user schema and the user
/// groups (for `in_group`).
fn compile_expression(
    r: &impl cohort_storage::Reader,
    users: &[Attribute],
    source: &str,
) -> Result<Expression, (Option<&'static str>, String)> {
    let mut names: HashMap<String, Uuid> = HashMap::new();
    groups::for_each_group(r, |g| {
        if g.subject == SubjectKind::User {
            names.insert(g.name.to_lowercase(), g.id);
        }
        Ok::<_, cohort_storage::StorageError>(())
    })
    .map_err(|e| (None, e.to_string()))?;
    let resolve = |s: &str| {
        Uuid::parse_str(s)
            .ok()
            .filter(|id| names.values().any(|v| v == id))
            .or_else(|| names.get(&s.to_lowercase()).copied())
    };
    let env = Environment {
        kind: SubjectKind::User,
        users,
        devices: &[],
        group: &resolve,
        related_only: false,
    };
    let e = Expression::compile(source, &env).map_err(|problems| {
        let message = problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        (problems.first().and_then(|p| p.limit), message)
    })?;
    if e.reads().reads_related {
        return Err((
            None,
            "routing expressions read the user's attributes and groups, not their devices".into(),
        ));
    }
    Ok(e)
}

/// Routing expressions as compiled, by source, with the user schema they
/// were compiled against.
///
/// Routing runs for every sign-in that anyone starts, before any password,
/// and compiling an expression (parsing and checking it, on a thread of its
/// own, after a scan of every group for `in_group`) costs far more than
/// evaluating it. Compiled on every sign-in, a routing document at its
/// limits (200 expression rules) took a request thread for a quarter of a
/// second per sign-in, so that a few clients starting sign-ins held up
/// every other request. A compiled expression is reused while the schema is
/// the same and every group it names still resolves as it did; otherwise
/// it is compiled again, so the answer is the one a fresh compile gives.
type Compiled = HashMap<String, (Vec<Attribute>, Arc<Expression>)>;

static COMPILED: LazyLock<Mutex<Compiled>> = LazyLock::new(Mutex::default);

/// Most expressions kept; past it the cache starts again. A routing
/// document has at most [`MAX_RULES`], so this holds one while an admin
/// edits the next.
const MAX_COMPILED: usize = 4 * MAX_RULES;

/// `source` compiled against `users`: from [`COMPILED`] when still valid.
fn compiled_expression(
    r: &impl cohort_storage::Reader,
    users: &[Attribute],
    source: &str,
) -> Result<Arc<Expression>, (Option<&'static str>, String)> {
    let cached = COMPILED
        .lock()
        .get(source)
        .filter(|(schema, _)| schema.as_slice() == users)
        .map(|(_, e)| Arc::clone(e));
    if let Some(e) = cached
        && resolves_as_compiled(r, &e).map_err(|e| (None, e.to_string()))?
    {
        return Ok(e);
    }
    let e = Arc::new(compile_expression(r, users, source)?);
    let mut cache = COMPILED.lock();
    if cache.len() >= MAX_COMPILED && !cache.contains_key(source) {
        cache.clear();
    }
    cache.insert(source.to_string(), (users.to_vec(), Arc::clone(&e)));
    Ok(e)
}

/// Whether every `in_group(...)` argument of `e` still names the user
/// group it named when `e` was compiled (by id, or by name in any case).
fn resolves_as_compiled(
    r: &impl cohort_storage::Reader,
    e: &Expression,
) -> Result<bool, DomainError> {
    for (arg, id) in e.named_groups() {
        let Some(g) = groups::group(r, id)? else {
            return Ok(false);
        };
        let named = Uuid::parse_str(arg).is_ok_and(|a| a == *id)
            || g.name.to_lowercase() == arg.to_lowercase();
        if g.subject != SubjectKind::User || !named {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A user as expressions see it.
struct UserRef<'a>(&'a User);

impl Related for UserRef<'_> {
    fn attribute(&self, name: &str) -> Option<AttrRef<'_>> {
        self.0.attribute_ref(name)
    }
}

/// Whether the routing expression `source` holds for `user`. An expression
/// that no longer compiles (an attribute it reads was deleted) or fails on
/// this user does not match, and says so in the log.
fn expression_holds(
    r: &impl cohort_storage::Reader,
    users: &[Attribute],
    source: &str,
    user: &User,
    now: DateTime<Utc>,
) -> Result<bool, DomainError> {
    let e = match compiled_expression(r, users, source) {
        Ok(e) => e,
        Err((_, message)) => {
            tracing::warn!(%message, "a routing expression no longer compiles; it matches nobody");
            return Ok(false);
        }
    };
    let reads = e.reads();
    let attributes: Vec<(String, AttrType)> = reads
        .own
        .iter()
        .filter_map(|n| {
            users
                .iter()
                .find(|a| &a.name == n)
                .map(|a| (n.clone(), a.attr_type))
        })
        .collect();
    let mut names = Vec::new();
    if reads.reads_groups {
        for id in groups::groups_of(r, &user.id)? {
            if let Some(g) = groups::group(r, &id)? {
                names.push((id, g.name));
            }
        }
    }
    let mut in_groups = Vec::new();
    for g in &reads.in_groups {
        if groups::is_member(r, g, &user.id)? {
            in_groups.push(*g);
        }
    }
    let subject = UserRef(user);
    let bindings = Bindings {
        kind: SubjectKind::User,
        subject: &subject,
        attributes: &attributes,
        groups: reads
            .reads_groups
            .then(|| names.iter().map(|(id, n)| (*id, n.as_str())).collect()),
        related: None,
        related_attributes: &[],
        in_groups,
        now,
    };
    static RUNTIME: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
    let scope = RUNTIME.get_or_init(Runtime::new).scope(&bindings);
    // The work budget bounds the evaluation (each step, scan and pattern is
    // charged), and the deadline backs it: this runs in a sign-in request
    // on an async worker, which must never be held long.
    let deadline = crate::clock::Deadline::after(crate::limits::ROUTING_EXPRESSION_DEADLINE);
    let verdict = crate::expression::with_deadline(Some(deadline), || scope.evaluate(&e));
    Ok(verdict.unwrap_or_else(|err| {
        tracing::info!(user = %user.id, error = %err.message, "a routing expression failed for a user; it does not match");
        false
    }))
}

/// Where `identifier` signs in.
pub(crate) fn route(
    r: &impl cohort_storage::Reader,
    users: &[Attribute],
    routing: &Routing,
    identifier: &str,
    now: DateTime<Utc>,
) -> Result<Route, DomainError> {
    let user = find_user(r, identifier)?;
    // Domains compare as IDNA A-labels (the identity rules' one form), so
    // a rule for `bücher.de` holds for `xn--bcher-kva.de` and `BÜCHER.de`.
    let domain_of = |s: &str| {
        s.rsplit_once('@')
            .map(|(_, d)| crate::directory::identity::domain_key(d))
    };
    // The user's email when the identifier names a user (a username may
    // contain `@` too, and must not route differently from the email);
    // otherwise the identifier typed.
    let domain = user
        .as_ref()
        .and_then(|u| domain_of(&u.email))
        .or_else(|| domain_of(identifier.trim()));
    for (i, rule) in routing.rules.iter().enumerate() {
        let holds = match &rule.condition {
            Condition::Group(g) => match &user {
                Some(u) => groups::is_member(r, g, &u.id)?,
                None => false,
            },
            Condition::EmailDomain(domains) => domain.as_ref().is_some_and(|d| {
                domains
                    .iter()
                    .any(|x| crate::directory::identity::domain_key(x) == *d)
            }),
            Condition::Expression(source) => match &user {
                Some(u) => expression_holds(r, users, source, u, now)?,
                None => false,
            },
        };
        if holds {
            return Ok(Route {
                user_id: user.map(|u| u.id),
                rule: Some(i),
                rule_name: Some(rule.name.clone()),
                target: rule.target.clone(),
            });
        }
    }
    Ok(Route {
        user_id: user.map(|u| u.id),
        rule: None,
        rule_name: None,
        target: routing.default.clone(),
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;
    use crate::config::{Config, Secret};

    const ADMIN: &str = "unit-admin-key-0123456789abcdef";

    async fn call(router: &axum::Router, method: &str, path: &str, body: Value) -> Value {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    /// Routing reuses a compiled expression, and compiles again whenever a
    /// fresh compile could answer differently: the schema changed, or a
    /// group it names was renamed, deleted or replaced by another of the
    /// same name.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compiled_expressions_are_reused_until_what_they_resolved_changes() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("data"),
            bootstrap_admin_key: Some(Secret::new(ADMIN)),
            ..Config::default()
        };
        let store =
            crate::server::open_store(&config.data_dir, &config.storage.open_options()).unwrap();
        let built =
            crate::server::build(&config, store.clone(), Arc::new(crate::clock::SystemClock))
                .unwrap();
        let router = crate::api::router(built.state);
        let group = |name: &str| json!({"name": name, "subject": "user"});
        let pilot = call(&router, "POST", "/api/v1/groups", group("Routing Pilot")).await;
        let pilot = pilot["id"].as_str().unwrap().to_string();
        let source = format!(
            "in_group('routing pilot') && in_group('{pilot}') && user.department != 'Legal'"
        );
        let users = || crate::directory::schema(&store, SubjectKind::User).unwrap();

        let first = compiled_expression(&store, &users(), &source).unwrap();
        let again = compiled_expression(&store, &users(), &source).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "compiled once, then reused");

        // A new attribute changes the schema: compiled again.
        call(
            &router,
            "POST",
            "/api/v1/attributes",
            json!({"name": "routing_region", "subject": "user", "type": "string"}),
        )
        .await;
        let after_schema = compiled_expression(&store, &users(), &source).unwrap();
        assert!(!Arc::ptr_eq(&first, &after_schema));
        assert!(Arc::ptr_eq(
            &after_schema,
            &compiled_expression(&store, &users(), &source).unwrap()
        ));

        // Renamed: the name no longer resolves, as a fresh compile says.
        let path = format!("/api/v1/groups/{pilot}");
        call(&router, "PATCH", &path, json!({"name": "Routing Pilot 2"})).await;
        let e = compiled_expression(&store, &users(), &source).unwrap_err();
        assert!(e.1.contains("routing pilot"), "{}", e.1);

        // Another group takes the name: the expression follows the name for
        // that argument and still needs the first group by id.
        call(&router, "POST", "/api/v1/groups", group("routing pilot")).await;
        let both = compiled_expression(&store, &users(), &source).unwrap();
        assert!(!Arc::ptr_eq(&both, &after_schema));
        assert_eq!(both.named_groups().len(), 2);
        assert!(
            both.named_groups()
                .iter()
                .all(|(_, g)| { groups::group(&store, g).unwrap().is_some() })
        );

        // Deleted: compiled again, and it no longer compiles.
        call(&router, "DELETE", &path, json!({})).await;
        assert!(compiled_expression(&store, &users(), &source).is_err());

        // `now` in a routing expression is the time the caller passes (the
        // injected clock), not the machine's.
        call(
            &router,
            "POST",
            "/api/v1/users",
            json!({"username": "ada", "email": "ada@example.com", "state": "active"}),
        )
        .await;
        let routing = Routing {
            rules: vec![Rule {
                name: "from 2100".into(),
                condition: Condition::Expression("now >= timestamp('2100-01-01T00:00:00Z')".into()),
                target: Target::Local,
            }],
            ..Routing::default()
        };
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let before = route(
            &store,
            &users(),
            &routing,
            "ada",
            at("2099-12-31T23:59:59Z"),
        );
        assert_eq!(before.unwrap().rule, None);
        let after = route(
            &store,
            &users(),
            &routing,
            "ada",
            at("2100-01-01T00:00:00Z"),
        );
        assert_eq!(after.unwrap().rule, Some(0));
    }
}
