//! Where federation keeps its data.

use cohort_storage::Keyspace;

/// IdP id → `Idp` JSON.
pub(super) const IDPS: Keyspace = Keyspace::new("idps");
/// Lowercased IdP name → IdP id.
pub(super) const IDP_NAMES: Keyspace = Keyspace::new("idp_names");
/// `current` → the routing document.
pub(super) const ROUTING: Keyspace = Keyspace::new("sign_in_routing");
/// `issuer \0 subject` → user id: upstream identities linked to users.
pub(super) const LINKS: Keyspace = Keyspace::new("idp_links");
/// `state` → a started sign-in awaiting the provider's callback.
pub(super) const PENDING: Keyspace = Keyspace::new("sign_in_pending");
