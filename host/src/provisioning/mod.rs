//! Provisioning: users arriving from elsewhere. `scim` is the SCIM 2.0
//! server identity providers (Okta, Entra ID) push users to. Every change
//! goes through the directory's own write path (validation, audit with the
//! SCIM client as actor, incremental group recompute).

pub mod scim;
