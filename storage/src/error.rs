//! The one error type of the storage layer. Domain errors wrap it, so it
//! carries no engine types: a message is all the domain needs to log.

use std::path::PathBuf;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage engine reported an error (I/O, corruption it detected).
    #[error("storage engine error: {0}")]
    Engine(String),
    /// Another process holds the data directory open.
    #[error("data directory {0} is in use by another process")]
    Locked(PathBuf),
    /// A flush to stable storage failed earlier. Writes are refused from then
    /// on, because the state on disk is no longer known (the lesson of
    /// PostgreSQL's fsync bug): restart the server to recover from the log.
    #[error("storage is read-only after a failed flush: {0}")]
    Poisoned(String),
    /// A stored value could not be decoded.
    #[error("corrupt record in keyspace {keyspace}: {detail}")]
    Corrupt {
        /// The keyspace the value was read from.
        keyspace: String,
        /// What the decoder said.
        detail: String,
    },
    /// The data directory was written by a newer Cohort than this one.
    #[error(
        "data directory has schema version {found}, but this build supports at most {supported}; upgrade Cohort"
    )]
    SchemaTooNew {
        /// The version stored in the data directory.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// A migration step failed; nothing of that step was written.
    #[error("migration to schema version {version} failed: {detail}")]
    Migration {
        /// The version the failed step would have produced.
        version: u32,
        /// What went wrong.
        detail: String,
    },
    /// A backup file is malformed, truncated or does not match its checksum.
    #[error("backup file is invalid at line {line}: {detail}")]
    BadBackup {
        /// 1-based line of the backup file where the problem was found.
        line: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// `restore` only writes into an empty data directory, so that it can
    /// never merge two directories by accident.
    #[error("data directory {0} is not empty; restore only writes into an empty directory")]
    NotEmpty(PathBuf),
    /// The same rule for a database: restore and migrate fill only a
    /// database that holds no Cohort data. Carries the URL without password.
    #[error(
        "database {0} is not empty: it already holds Cohort data, and restore and migrate only write into an empty database"
    )]
    DatabaseNotEmpty(String),
    /// A restore into this database started and never finished: what is in
    /// it is part of a directory, which no server may serve.
    #[error("the database holds an interrupted restore; drop it, create it again and restore anew")]
    InterruptedRestore,
    /// The data directory was written by another engine than the one
    /// configured. Cohort never converts a directory silently: take a backup
    /// and restore it with the other engine.
    #[error(
        "data directory {dir} holds a {found} store, but the configured storage engine is {configured}; set [storage] engine = \"{found}\" (COHORT_STORAGE_ENGINE), or move the data with `cohort backup --offline` and `cohort restore`"
    )]
    WrongEngine {
        /// The data directory.
        dir: PathBuf,
        /// The engine whose files are there.
        found: &'static str,
        /// The engine the configuration asks for.
        configured: &'static str,
    },
    /// Reading or writing a file outside the engine (backups) failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        StorageError::Engine(e.to_string())
    }
}
