//! The Cohort server: directory, audit log, authentication and the HTTP API
//! over them. `main.rs` is a thin command-line shell around [`server`].

pub mod access;
pub mod api;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod csv;
pub mod devices;
pub mod directory;
pub mod engines;
pub mod error;
pub mod expression;
pub mod federation;
pub mod groups;
pub(crate) mod id_pair;
pub mod json;
pub mod limits;
pub mod migrations;
pub(crate) mod net;
pub mod outbound;
pub mod page;
pub mod plugins;
pub mod provisioning;
pub mod replication;
pub mod server;
pub mod serving;
pub mod sessions;

/// What unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    use cohort_storage::{Engine, OpenOptions, Store};

    /// A new, empty store for a unit test: in `dir` on the default engine,
    /// or in a database of its own when the suite runs on PostgreSQL
    /// (`COHORT_TEST_STORAGE=postgres`).
    pub(crate) fn open_store(dir: &Path) -> Store {
        let options = if cohort_tests::postgres::postgres_selected() {
            OpenOptions {
                engine: Engine::Postgres,
                url: Some(cohort_tests::postgres::fresh_database()),
                connections: 2,
                ..OpenOptions::default()
            }
        } else {
            OpenOptions::default()
        };
        Store::open(dir, &options).expect("opening the test store")
    }
}
