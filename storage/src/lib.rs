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
pub use txn::{WriteTxn, decode_json};

/// A key and its value, as scans return them. The key is relative to the
/// keyspace it was read from.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A database URL with its password replaced, for logs and messages. Both
/// forms PostgreSQL accepts are covered: `postgres://user:secret@host/db`
/// and `host=… password=secret`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => authority.to_string(),
            },
            None => authority.to_string(),
        };
        let path = redact_password_params(path);
        return format!("{scheme}://{authority}{path}");
    }
    redact_password_params(url)
}

/// `password=…` in a query string or a key-value connection string.
fn redact_password_params(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("password=") {
        let before_ok = i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&' | b' ');
        out.push_str(&rest[..i + "password=".len()]);
        rest = &rest[i + "password=".len()..];
        if before_ok {
            let end = rest.find(['&', ' ']).unwrap_or(rest.len());
            out.push_str("***");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://cohort:s3cret@db:5432/cohort?sslmode=disable"),
            "postgres://cohort:***@db:5432/cohort?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgresql://db/cohort?user=c&password=s3cret&x=1"),
            "postgresql://db/cohort?user=c&password=***&x=1"
        );
        assert_eq!(
            redact_url("host=db password=s3cret user=c"),
            "host=db password=*** user=c"
        );
        assert_eq!(redact_url("postgres://db/cohort"), "postgres://db/cohort");
    }
}
