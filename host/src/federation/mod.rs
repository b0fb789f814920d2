//! Federated sign-in: users sign in at Cohort through an upstream OpenID
//! Provider (Okta, Google, Entra ID, or any OIDC provider).
//!
//! An identity provider (IdP) pairs a connector plugin instance, which holds
//! the provider settings and the client secret (sealed, write-only), with
//! what Cohort decides: how an upstream identity is matched to a directory
//! user, whether unknown users are created, and whether the IdP is in use.
//! The protocol (discovery, the code flow with PKCE, ID token validation)
//! is the host's; connectors only carry each provider's quirks.
//!
//! - `idps`: IdP configuration, with discovery checked when an IdP is saved,
//!   so that a wrong issuer is the admin's error at once rather than the
//!   users' at their first sign-in;
//! - `routing`: which way each user signs in, and its simulation;
//! - `matching`: from upstream claims to one directory user;
//! - `flow`: the sign-in itself (code flow with PKCE, the callback, local
//!   passwords), ending in a session;
//! - `id_token`: ID token validation;
//! - `throttle`: rate limits on starting a sign-in.

mod discovery;
pub mod flow;
pub mod id_token;
pub mod idps;
mod layout;
pub mod matching;
mod provider;
mod refusal;
pub mod routing;
pub mod throttle;

pub use flow::{SignIn, Started};
pub use idps::Federation;
pub use provider::{Discovered, Idp, IdpInput, Matching};
pub use refusal::{Reason, Refusal};
pub use routing::{Condition, Route, Routing, RoutingInput, Rule, Target};
