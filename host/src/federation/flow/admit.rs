//! Admission: from a validated upstream identity to a directory user and a
//! session. The identity is matched (link, else the IdP's attribute), may
//! only sign in a user whom routing sends to this IdP, and with JIT creates
//! the user; the link, the user, the session and the audit event commit in
//! one transaction, so a refusal leaves nothing behind. Apart from the code
//! flow because it trusts the provider's answer and decides who that is.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{Finished, SignIn, actor};
use crate::audit::{self, Record};
use crate::auth::{Actor, Origin};
use crate::directory::{SubjectKind, User, UserInput, UserState};
use crate::error::DomainError;
use crate::federation::Idp;
use crate::federation::idps::Identity;
use crate::federation::layout::LINKS;
use crate::federation::matching::{self, Match, Outcome};
use crate::federation::refusal::{Reason, Refusal};
use crate::federation::routing::{self, Target};
use crate::sessions::Method;

/// Why the admitting transaction was abandoned.
enum Abort {
    Refused(Refusal),
    Domain(DomainError),
}

impl From<DomainError> for Abort {
    fn from(e: DomainError) -> Self {
        Abort::Domain(e)
    }
}

impl From<cohort_storage::StorageError> for Abort {
    fn from(e: cohort_storage::StorageError) -> Self {
        Abort::Domain(e.into())
    }
}

impl SignIn {
    /// Matches the identity to a user and opens the session, creating the
    /// link (and, with JIT, the user) in the same transaction.
    pub(super) async fn admit(
        &self,
        origin: &Origin,
        idp: &Idp,
        mapped: Identity,
        return_to: String,
    ) -> Result<Finished, Refusal> {
        let issuer = idp.discovered.issuer.clone();
        let attribute = idp.matching.attribute.clone();
        let value = match mapped.attributes.get(&attribute) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let actor = actor(origin);
        let now = self.inner.federation.now();
        let inner = &self.inner;
        let schema = crate::directory::schema(&inner.store, SubjectKind::User)?;
        let routes = routing::load(&inner.store)?;
        let committed = inner.store.write(|txn| {
            let m = matching::match_identity(
                &*txn,
                &issuer,
                &mapped.subject,
                &attribute,
                value.as_deref(),
                idp.jit,
            )?;
            // The identity may only sign in the user routing sends to this
            // IdP: otherwise any IdP in use (a partner's, say) could assert
            // the email of a user who signs in elsewhere.
            let routed_here = |txn: &cohort_storage::WriteTxn<'_>, email: &str| {
                let r = routing::route(txn, &schema, &routes, email, now)?;
                Ok::<_, DomainError>(matches!(r.target, Target::Idp { idp_id } if idp_id == idp.id))
            };
            let wrong_idp = || {
                Abort::Refused(Refusal::new(
                    Reason::WrongIdp,
                    format!(
                        "Your account does not sign in through {}. Start again with your own username or email.",
                        idp.name
                    ),
                    "routing sends the matched user to another way of signing in",
                ))
            };
            let user = match admission(&m) {
                Admission::Existing { user_id, link: new_link } => {
                    let user = crate::directory::load_user(txn, &user_id)?;
                    if !routed_here(txn, &user.email)? {
                        return Err(wrong_idp());
                    }
                    if new_link {
                        link(txn, &actor, now, idp, &mapped.subject, &user)?;
                    }
                    user
                }
                Admission::Create => {
                    let input = jit_input(&mapped.attributes);
                    if !routed_here(txn, &input.email)? {
                        return Err(wrong_idp());
                    }
                    // An error aborts the transaction, so a half-created
                    // user is never left behind.
                    let user = inner
                        .directory
                        .create_user_in(txn, &actor, input, now)
                        .map_err(|e| {
                            Abort::Refused(Refusal::new(
                                Reason::JitFailed,
                                "Your account could not be created in Cohort. Ask your administrator.",
                                format!("just-in-time creation failed: {e}"),
                            ))
                        })?;
                    link(txn, &actor, now, idp, &mapped.subject, &user)?;
                    user
                }
                Admission::Refuse => return Err(Abort::Refused(refusal_for(&m, &idp.name))),
            };
            let opened = inner.open_session(
                txn,
                &actor,
                now,
                &user,
                Method::Idp {
                    idp_id: idp.id,
                    idp_name: idp.name.clone(),
                },
                vec![
                    ("idp", Value::from(idp.name.clone())),
                    ("subject", Value::from(mapped.subject.clone())),
                    (
                        "match",
                        serde_json::to_value(&m.outcome).unwrap_or_default(),
                    ),
                ],
            )?;
            Ok((opened, user))
        });
        let (opened, user) = match committed {
            Ok(c) => c.durable().await.map_err(DomainError::from)?,
            Err(Abort::Refused(r)) => return Err(r),
            Err(Abort::Domain(e)) => return Err(e.into()),
        };
        Ok(Finished {
            opened,
            return_to,
            user,
        })
    }
}

/// What admission does with a match.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Sign in an existing user, storing the link first when the identity
    /// matched on its attribute rather than through a link.
    Existing { user_id: Uuid, link: bool },
    /// Create the user just in time, and link it.
    Create,
    /// Refuse, with [`refusal_for`]'s reason.
    Refuse,
}

/// Decides admission from a match. A match that names no user cannot sign
/// anyone in, whatever its outcome says: it is refused (as an internal
/// error), not trusted.
pub(super) fn admission(m: &Match) -> Admission {
    match (&m.outcome, m.user_id) {
        (Outcome::Linked, Some(user_id)) => Admission::Existing {
            user_id,
            link: false,
        },
        (Outcome::Matched, Some(user_id)) => Admission::Existing {
            user_id,
            link: true,
        },
        (Outcome::WouldCreate, _) => Admission::Create,
        _ => Admission::Refuse,
    }
}

/// Stores the link from the upstream identity to `user`.
fn link(
    txn: &mut cohort_storage::WriteTxn<'_>,
    actor: &Actor,
    now: DateTime<Utc>,
    idp: &Idp,
    subject: &str,
    user: &User,
) -> Result<(), DomainError> {
    txn.put(
        LINKS,
        &matching::link_key(&idp.discovered.issuer, subject),
        user.id.as_bytes().to_vec(),
    );
    audit::record(
        txn,
        now,
        actor,
        Record {
            action: "idp_link.create",
            resource_type: "user",
            resource_id: user.id.to_string(),
            changes: audit::changes(&[
                ("idp", Value::Null, Value::from(idp.name.clone())),
                (
                    "issuer",
                    Value::Null,
                    Value::from(idp.discovered.issuer.clone()),
                ),
                ("subject", Value::Null, Value::from(subject)),
            ]),
        },
    )?;
    Ok(())
}

/// The refusal a failed match gets.
pub(super) fn refusal_for(m: &Match, idp_name: &str) -> Refusal {
    let (code, message) = match m.outcome {
        Outcome::NoMatch | Outcome::WouldCreate => (
            Reason::NoMatch,
            format!(
                "{} signed you in, but there is no matching account in Cohort. Ask your administrator to create it.",
                idp_name
            ),
        ),
        Outcome::Ambiguous => (
            Reason::Ambiguous,
            "More than one account in Cohort matches you, so none was chosen. Ask your administrator."
                .to_string(),
        ),
        Outcome::MissingAttribute => (
            Reason::MissingAttribute,
            format!(
                "{} did not say who you are in a way Cohort can match. Ask your administrator.",
                idp_name
            ),
        ),
        Outcome::InvalidIdentity => (
            Reason::InvalidIdentity,
            format!(
                "{} gave an account name Cohort does not accept (it contains invisible characters or mixes alphabets). Ask your administrator.",
                idp_name
            ),
        ),
        Outcome::Refused => (
            Reason::UserNotActive,
            "Your account is not active (it is staged or suspended). Ask your administrator."
                .to_string(),
        ),
        Outcome::Linked | Outcome::Matched => (Reason::Internal, "Sign-in failed.".to_string()),
    };
    Refusal::new(code, message, m.detail.clone())
}

/// A new user from the mapped attributes: the standard fields the connector
/// gave, active, with the email as username when none was mapped.
pub(super) fn jit_input(attributes: &BTreeMap<String, Value>) -> UserInput {
    let text = |k: &str| attributes.get(k).and_then(Value::as_str).map(String::from);
    let email = text("email").unwrap_or_default();
    UserInput {
        username: text("username").unwrap_or_else(|| email.clone()),
        email,
        state: Some(UserState::Active),
        first_name: text("first_name"),
        last_name: text("last_name"),
        display_name: text("display_name"),
        department: text("department"),
        job_title: text("job_title"),
        employee_id: text("employee_id"),
        ..UserInput::default()
    }
}
