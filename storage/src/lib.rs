//! Everything in Cohort that touches the disk goes through this crate.
//!
//! The domain (users, devices, groups, audit) sees an ordered key-value store
//! split into named keyspaces, with serializable write transactions whose
//! results are durable before they are acknowledged. It never sees an engine
//! type (fjall, the default, sled, or PostgreSQL for several hosts): the
//! engine sits behind the crate-private [`backend::Backend`] trait, so the
//! domain is the same on every engine.
//!
//! Three promises the rest of Cohort builds on:
//! - **Atomicity**: everything a [`WriteTxn`] writes lands together or not at
//!   all, also across a crash (a change and its audit event, a membership
//!   delta).
//! - **Durability**: [`Committed::durable`] resolves only once the write has
//!   been flushed to stable storage. Concurrent writers share one flush (group
//!   commit), which is what makes durable writes cheap.
//! - **Serializability**: write transactions run one at a time, so a
//!   uniqueness check and the write it guards cannot interleave with another
//!   writer. Reads outside transactions never block.

mod backend;
mod backup;
mod durability;
mod error;
mod fjall_backend;
mod keyspace;
mod lease_cache;
mod migrate;
mod pending;
mod postgres_backend;
mod reader;
mod sled_backend;
mod store;
mod txn;

pub use backup::{BackupKey, BackupSummary, Verify, restore_into};
pub use error::StorageError;
pub use keyspace::Keyspace;
pub use migrate::Migration;
pub use reader::Reader;
pub use store::{Committed, Engine, LiveSize, OpenOptions, Store};
pub use txn::{Savepoint, WriteTxn, decode_json};

/// What a shared rate bucket said (see [`Store::take_rate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// The event is allowed, and counted.
    Allowed,
    /// Refused: the bucket allows the next one after this many
    /// microseconds.
    Wait(i64),
}

/// A key and its value, as scans return them. The key is relative to the
/// keyspace it was read from.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A database URL for logs and messages: rebuilt from what the PostgreSQL
/// client parsed (user, hosts, ports, database), so that the password,
/// wherever and however it was written, is never part of it.
pub fn redact_url(url: &str) -> String {
    let Ok(config) = url.parse::<postgres::Config>() else {
        return "(a database URL that does not parse)".into();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            (
                "postgres://cohort:s3cret@db:5432/cohort?sslmode=disable",
                "postgres://cohort@db:5432/cohort",
            ),
            (
                "postgresql://db/cohort?user=c&password=s3cret&application_name=x",
                "postgres://c@db:5432/cohort",
            ),
            (
                "postgres://cohort:ab/cd@db/cohort",
                "postgres://cohort@db:5432/cohort",
            ),
            (
                "postgres://cohort:ab?cd@db/cohort",
                "postgres://cohort@db:5432/cohort",
            ),
            (
                "postgresql://db/c?user=u&pass%77ord=s3cret",
                "postgres://u@db:5432/c",
            ),
            ("host=db password = 's3 cret' user=c", "postgres://c@db/"),
            (
                "host=db\tpassword=s3cret user=c dbname=x",
                "postgres://c@db/x",
            ),
            ("postgres://db/cohort", "postgres://db:5432/cohort"),
        ] {
            let got = redact_url(url);
            assert_eq!(got, shown, "{url}");
            assert!(
                !got.contains("s3") && !got.contains("ab") && !got.contains("cd@"),
                "{got}"
            );
        }
        assert_eq!(
            redact_url("mysql://u:s3cret@db"),
            "(a database URL that does not parse)"
        );
    }
}
