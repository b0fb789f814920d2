//! What an identity provider is, as stored and as the API shows it, and the
//! one question other parts of sign-in ask of the stored records (does this
//! provider exist). Kept apart from the service in `idps` so that routing,
//! which the service calls, can ask it without calling back into the
//! service.

use chrono::{DateTime, Utc};
use cohort_storage::WriteTxn;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::layout::IDPS;
use crate::error::DomainError;

/// How an upstream identity is matched to a directory user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Matching {
    /// The directory attribute the connector maps the identity into and that
    /// is compared (case-insensitively for `email` and `username`).
    #[serde(default = "default_attribute")]
    pub attribute: String,
}

fn default_attribute() -> String {
    "email".into()
}

impl Default for Matching {
    fn default() -> Self {
        Matching {
            attribute: default_attribute(),
        }
    }
}

/// What discovery found when the IdP was last saved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Discovered {
    /// The issuer, as the provider states it.
    pub issuer: String,
    /// Where users are sent to sign in.
    pub authorization_endpoint: String,
    /// Where codes are exchanged.
    pub token_endpoint: Option<String>,
    /// The provider's signing keys.
    pub jwks_uri: String,
    /// ID token signing algorithms the provider advertises; nothing else is
    /// accepted (and never `none`).
    pub signing_algorithms: Vec<String>,
    /// How the provider accepts client credentials at the token endpoint
    /// (`client_secret_basic` when it does not say).
    #[serde(default)]
    pub token_auth_methods: Vec<String>,
    /// Number of keys in the key set when it was fetched.
    pub keys: usize,
    /// When.
    pub checked_at: DateTime<Utc>,
}

/// An identity provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Idp {
    /// Stable id.
    pub id: Uuid,
    /// Unique name, shown to users.
    pub name: String,
    /// The connector plugin instance with the provider settings and the
    /// client secret (see `/api/v1/plugin-instances`).
    pub instance_id: String,
    /// Its connector plugin.
    pub connector: String,
    /// How identities are matched to users.
    pub matching: Matching,
    /// Create a user (as `active`) when no user matches. Off by default:
    /// users must exist in the directory first.
    pub jit: bool,
    /// Whether sign-ins may use it.
    pub enabled: bool,
    /// Discovery, as last checked.
    pub discovered: Discovered,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Increments on every change; the ETag.
    pub version: u64,
}

/// The writable fields of an IdP.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdpInput {
    /// Unique name.
    pub name: String,
    /// The id or name of an `idp-connector` plugin instance.
    pub instance: String,
    /// How identities are matched to users (default: `email`).
    #[serde(default)]
    pub matching: Matching,
    /// Create unknown users (default false).
    #[serde(default)]
    pub jit: bool,
    /// In use (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl From<&Idp> for IdpInput {
    fn from(i: &Idp) -> Self {
        IdpInput {
            name: i.name.clone(),
            instance: i.instance_id.clone(),
            matching: i.matching.clone(),
            jit: i.jit,
            enabled: i.enabled,
        }
    }
}

/// Whether an identity provider with this id exists, inside the caller's
/// transaction.
pub(super) fn exists(txn: &WriteTxn<'_>, id: &Uuid) -> Result<bool, DomainError> {
    Ok(txn.get_json::<Idp>(IDPS, id.as_bytes())?.is_some())
}
