//! The end-to-end tests as one test binary: each file is a module, so the
//! harness and its dependencies are linked once instead of once per file.
//! Run one file's tests with `cargo test -p cohort-tests --test e2e <file>::`.

mod attacks_cel;
mod attacks_http;
mod backup;
mod crash;
mod federation;
mod groups_oracle;
mod groups_related;
mod hostile;
mod hosts;
mod identities;
mod imports;
mod ops;
mod plugin_author;
mod plugin_cli;
mod plugins;
mod schemathesis;
mod scim;
mod sign_in;
