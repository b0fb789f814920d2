//! `cohort migrate`: moving a whole directory from one storage engine to
//! another (an embedded data directory to PostgreSQL when a customer
//! outgrows one machine, and back).
//!
//! The move goes through the backup format rather than engine to engine,
//! so that there is one way to read and write a whole store: what `migrate`
//! writes is exactly what a restore would, and it is checked the same way.
//! Afterwards the target is read back and must give the same entries with
//! the same checksum as the source, or the command fails.

use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cohort_storage::{BackupKey, Engine, OpenOptions, StorageError, Store, Verify};

/// Where a store lives: `fjall:DIR`, `sled:DIR`, a `postgres://` URL, or
/// `postgres` alone for the configured one (`storage.url`,
/// `COHORT_STORAGE_URL`), which keeps the password off the command line.
#[derive(Clone, PartialEq, Eq)]
pub struct Location {
    /// The engine.
    pub engine: Engine,
    /// The data directory of an embedded engine.
    pub dir: PathBuf,
    /// The database of [`Engine::Postgres`].
    pub url: Option<String>,
}

impl Location {
    /// What [`Store::open`] needs for this location.
    pub fn open_options(&self, cache_bytes: u64, connections: usize) -> OpenOptions {
        OpenOptions {
            cache_bytes,
            engine: self.engine,
            url: self.url.clone(),
            connections,
        }
    }
}

/// Never prints a password: see [`cohort_storage::redact_url`].
impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Location({self})")
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.url, self.engine) {
            (Some(url), _) => f.write_str(&cohort_storage::redact_url(url)),
            (None, Engine::Postgres) => f.write_str("the configured postgres database"),
            (None, _) => write!(f, "{}:{}", self.engine, self.dir.display()),
        }
    }
}

impl FromStr for Location {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The value may hold a password: messages never repeat it.
        const USAGE: &str = "not a store location: use fjall:DIR, sled:DIR, postgres://… or postgres (the configured database)";
        if s == "postgres" {
            return Ok(Location {
                engine: Engine::Postgres,
                dir: PathBuf::new(),
                url: None,
            });
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Location {
                engine: Engine::Postgres,
                dir: PathBuf::new(),
                url: Some(s.to_string()),
            });
        }
        let Some((engine, dir)) = s.split_once(':') else {
            return Err(USAGE.into());
        };
        let engine: Engine = engine.parse().map_err(|_| USAGE.to_string())?;
        if engine == Engine::Postgres || dir.is_empty() {
            return Err(USAGE.into());
        }
        Ok(Location {
            engine,
            dir: PathBuf::from(dir),
            url: None,
        })
    }
}

/// What a finished move found on both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    /// Entries (keys) copied, counted again in the target.
    pub entries: u64,
    /// The schema version the directory had; the target keeps it, and
    /// `cohort serve` upgrades it as usual.
    pub schema_version: u32,
    /// SHA-256 over every entry, equal on both sides.
    pub sha256: String,
}

/// Why a move did not happen, or did not check out.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// Opening, reading or writing a store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The scratch file could not be written.
    #[error("scratch file: {0}")]
    Io(#[from] std::io::Error),
    /// Source and target are the same place.
    #[error("the source and the target are the same store")]
    SameStore,
    /// The source holds nothing: most likely a mistyped location.
    #[error("{0} holds no Cohort data (is the location right?)")]
    EmptySource(String),
    /// The target does not read back as the source: counts or checksums
    /// differ. It is left as it is, for inspection.
    #[error(
        "the copy does not match: source {source_entries} entries (sha256 {source_sha}), target {target_entries} (sha256 {target_sha})"
    )]
    Mismatch {
        /// Entries read from the source.
        source_entries: u64,
        /// Their checksum.
        source_sha: String,
        /// Entries read back from the target.
        target_entries: u64,
        /// Their checksum.
        target_sha: String,
    },
}

/// Copies the store at `from` into `to`, which must be empty, and checks
/// the copy. Neither may be in use by a server while this runs. `scratch`
/// is a folder for the intermediate file, which can be as large as the
/// store; `created_unix` is recorded in it.
pub fn move_store(
    from: &Location,
    to: &Location,
    options: (u64, usize),
    scratch: &Path,
    created_unix: u64,
) -> Result<Moved, MoveError> {
    if from == to {
        return Err(MoveError::SameStore);
    }
    let (cache_bytes, connections) = options;
    // The file never leaves this process, but it is authenticated all the
    // same, because the restore path only reads authenticated files.
    let key = BackupKey::new(rand::random());
    let mut file = tempfile::tempfile_in(scratch)?;
    // An embedded source is never created by looking at it.
    if from.url.is_none() && !from.dir.is_dir() {
        return Err(MoveError::EmptySource(from.to_string()));
    }
    let source = {
        let store = Store::open(&from.dir, &from.open_options(cache_bytes, connections))?;
        if store.is_empty()? {
            return Err(MoveError::EmptySource(from.to_string()));
        }
        let mut w = std::io::BufWriter::new(&mut file);
        let summary = store.export(&mut w, &key, created_unix)?;
        std::io::Write::flush(&mut w)?;
        summary
    };
    file.rewind()?;
    let target_options = to.open_options(cache_bytes, connections);
    cohort_storage::restore_into(
        &to.dir,
        &mut BufReader::new(file),
        &target_options,
        Verify {
            key: &key,
            allow_unauthenticated: false,
        },
    )?;
    let target =
        Store::open(&to.dir, &target_options)?.export(&mut std::io::sink(), &key, created_unix)?;
    if target.entries != source.entries || target.sha256 != source.sha256 {
        return Err(MoveError::Mismatch {
            source_entries: source.entries,
            source_sha: source.sha256,
            target_entries: target.entries,
            target_sha: target.sha256,
        });
    }
    Ok(Moved {
        entries: source.entries,
        schema_version: source.schema_version,
        sha256: source.sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_print_without_passwords() {
        let l: Location = "sled:./data".parse().unwrap();
        assert_eq!(l.engine, Engine::Sled);
        assert_eq!(l.dir, PathBuf::from("./data"));
        let p: Location = "postgres://c:pw@db/cohort".parse().unwrap();
        assert_eq!(p.engine, Engine::Postgres);
        assert_eq!(p.to_string(), "postgres://c@db:5432/cohort");
        assert_eq!(format!("{p:?}"), "Location(postgres://c@db:5432/cohort)");
        let configured: Location = "postgres".parse().unwrap();
        assert_eq!(
            (configured.engine, configured.url),
            (Engine::Postgres, None)
        );
        for bad in [
            "./data",
            "postgres:x",
            "fjall:",
            "mysql:/x",
            "Postgres://u:pw@db",
        ] {
            let err = bad.parse::<Location>().unwrap_err();
            assert!(!err.contains("pw"), "{err}");
        }
    }
}
