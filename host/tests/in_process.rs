//! The server's integration tests as one test binary: each file is a module,
//! so the server and its dependencies are linked once instead of once per
//! file (most of what a test build spends its time on). `cel_memory` stays a
//! binary of its own because it counts the whole process's heap.

mod common;

mod access;
mod audit;
mod cel_conformance;
mod devices;
mod directory;
mod dry_runs;
mod errors;
mod exemption_expiry;
mod groups;
mod groups_cel;
mod id_tokens;
mod identities;
mod import_schedules;
mod outbound;
mod plugin_runtime;
mod roles;
mod url_fields;
