//! Matching an upstream identity to a directory user.
//!
//! A stored link (issuer + subject) wins: once a user has signed in through
//! a provider, a later change of their email upstream does not move the
//! sign-in to somebody else. Without a link, the identity is matched on the
//! IdP's configured attribute, which the connector maps from the claims.
//! Exactly one user must match. Staged and suspended users are refused.
//! The same function serves the sign-in simulation and (next) the real
//! callback, so the two cannot disagree.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::layout::LINKS;
use crate::directory::identity;
use crate::directory::read as directory;
use crate::directory::{AttrRef, Subject, User, UserState};
use crate::error::DomainError;
use cohort_storage::Reader;

/// How an identity matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Through a stored link.
    Linked,
    /// On the matching attribute; a link would be stored.
    Matched,
    /// Nobody matched, and the IdP does not create users.
    NoMatch,
    /// Nobody matched; the IdP would create the user (just in time).
    WouldCreate,
    /// Several users have the value: refused, as guessing could sign in
    /// the wrong person.
    Ambiguous,
    /// The connector mapped no value for the matching attribute.
    MissingAttribute,
    /// The provider's username or email breaks the identity rules
    /// (invisible characters, mixed scripts): refused rather than matched
    /// onto whichever user it resembles.
    InvalidIdentity,
    /// The user matched but may not sign in (staged or suspended).
    Refused,
}

/// The result of matching.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Match {
    /// What happened.
    pub outcome: Outcome,
    /// The user, when one was found.
    pub user_id: Option<Uuid>,
    /// In words, for the admin (and, shortened, the user's page).
    pub detail: String,
}

/// The key of a link.
pub(crate) fn link_key(issuer: &str, subject: &str) -> Vec<u8> {
    [issuer.as_bytes(), &[0], subject.as_bytes()].concat()
}

/// Matches `subject` at `issuer`, whose `attribute` value (as mapped by the
/// connector) is `value`.
pub(crate) fn match_identity(
    r: &impl Reader,
    issuer: &str,
    subject: &str,
    attribute: &str,
    value: Option<&str>,
    jit: bool,
) -> Result<Match, DomainError> {
    if let Some(id) = r.get(LINKS, &link_key(issuer, subject))?
        && let Ok(id) = Uuid::from_slice(&id)
        && let Some(user) = directory::user(r, &id)?
    {
        return Ok(admit(user, Outcome::Linked, "linked to this identity"));
    }
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(Match {
            outcome: Outcome::MissingAttribute,
            user_id: None,
            detail: format!("the provider's claims give no {attribute}"),
        });
    };
    // A claim is held to the rules a username or email typed into Cohort
    // is: a look-alike must not reach the real user by the lenient key.
    let refused = match attribute {
        "email" => identity::email(value).err(),
        "username" => identity::username(value).err(),
        _ => None,
    };
    if let Some(e) = refused {
        return Ok(Match {
            outcome: Outcome::InvalidIdentity,
            user_id: None,
            detail: format!(
                "the provider's {attribute} {value:?} is refused ({}): {e}",
                e.code()
            ),
        });
    }
    let found = candidates(r, attribute, value)?;
    match found.len() {
        0 if jit => Ok(Match {
            outcome: Outcome::WouldCreate,
            user_id: None,
            detail: format!("no user has {attribute} {value:?}; one would be created"),
        }),
        0 => Ok(Match {
            outcome: Outcome::NoMatch,
            user_id: None,
            detail: format!("no user has {attribute} {value:?}"),
        }),
        1 => {
            let user = found.into_iter().next().expect("one");
            Ok(admit(
                user,
                Outcome::Matched,
                &format!("{attribute} is {value:?}"),
            ))
        }
        _ => Ok(Match {
            outcome: Outcome::Ambiguous,
            user_id: None,
            detail: format!("more than one user has {attribute} {value:?}"),
        }),
    }
}

fn admit(user: User, outcome: Outcome, why: &str) -> Match {
    match user.state {
        UserState::Active => Match {
            outcome,
            user_id: Some(user.id),
            detail: format!("user {:?}: {why}", user.username),
        },
        state => Match {
            outcome: Outcome::Refused,
            user_id: Some(user.id),
            detail: format!("user {:?} is {}: {why}", user.username, state.as_str()),
        },
    }
}

/// The users whose `attribute` equals `value`, at most two (two is already
/// ambiguous): through the unique indexes for `email` and `username`
/// (by their identity keys), by a scan otherwise.
fn candidates(r: &impl Reader, attribute: &str, value: &str) -> Result<Vec<User>, DomainError> {
    let indexed = match attribute {
        "email" => Some(directory::user_by_email(r, value)?),
        "username" => Some(directory::user_by_username(r, value)?),
        _ => None,
    };
    if let Some(user) = indexed {
        return Ok(user.into_iter().collect());
    }
    let mut out = Vec::new();
    directory::for_each_user(r, |user| {
        let equal = match user.attribute_ref(attribute) {
            Some(AttrRef::Text(t)) => t == value,
            Some(AttrRef::Id(id)) => id.to_string() == value,
            _ => false,
        };
        if equal && out.len() < 2 {
            out.push(user);
        }
        Ok::<_, DomainError>(())
    })?;
    Ok(out)
}
