//! Provisioning: users arriving from elsewhere. `scim` is the SCIM 2.0
//! server identity providers (Okta, Entra ID) push users to; `imports`
//! pulls them from importer plugins (HR systems, other directories). Every change
//! goes through the directory's own write path (validation, audit with the
//! SCIM client as actor, incremental group recompute).

pub mod imports;
pub mod scim;
