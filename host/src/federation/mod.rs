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
//! Built so far:
//! - IdP configuration, with discovery checked when an IdP is saved, so that
//!   a wrong issuer is the admin's error at once rather than the users' at
//!   their first sign-in;
//! - routing, and its simulation for admins, with the matching of upstream
//!   claims to a directory user.

mod http;
pub mod idps;
pub mod keys;
pub mod matching;
pub mod routing;

pub use idps::{Discovered, Federation, Idp, IdpInput, Matching};
pub use routing::{Condition, Route, Routing, RoutingInput, Rule, Target};
