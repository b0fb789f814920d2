//! Portable backups: JSON lines, one entry per key, independent of the engine,
//! so a backup taken from sled can be restored into any later backend.
//!
//! ```text
//! {"format":"cohort-backup","format_version":1,"schema_version":1,"created_unix":1764000000}
//! {"ks":"users","k":"<base64url>","v":"<base64url>"}
//! ...
//! {"end":{"entries":1234,"sha256":"<hex of all entry lines>","hmac_sha256":"<hex>"}}
//! ```
//!
//! The trailer makes truncation and corruption detectable before anything is
//! restored. A checksum alone does not stop someone who can edit the file
//! (adding an API key hash or a plugin, then fixing the checksum), so since
//! format version 2 the header and entry lines are also authenticated with
//! HMAC-SHA256 under a [`BackupKey`] the host derives from its secret key.
//! Version 1 files have no HMAC and are restored only when the caller says
//! so explicitly.

use std::io::{BufRead, Write};
use std::ops::Bound;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keyspace::split;
use crate::{OpenOptions, StorageError, Store};

const FORMAT: &str = "cohort-backup";
const FORMAT_VERSION: u32 = 2;
/// The first version whose trailer carries an HMAC.
const AUTHENTICATED_SINCE: u32 = 2;

type HmacSha256 = Hmac<Sha256>;

/// The key backups are authenticated with. The host derives it from its
/// secret key, under a label of its own, so it is never the key that seals
/// secrets.
#[derive(Clone)]
pub struct BackupKey([u8; 32]);

impl BackupKey {
    /// Wraps derived key material.
    pub fn new(bytes: [u8; 32]) -> BackupKey {
        BackupKey(bytes)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC pads a key shorter than the hash's block with zeros (RFC
        // 2104), so the 32-byte key padded to the 64-byte block is the same
        // key, in the fixed-size form that cannot fail.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.0);
        <HmacSha256 as KeyInit>::new(&block.into())
    }
}

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupKey([redacted])")
    }
}

/// How a restore checks the file.
#[derive(Debug, Clone, Copy)]
pub struct Verify<'a> {
    /// The key the backup must be authenticated with.
    pub key: &'a BackupKey,
    /// Accept a version 1 backup, which has a checksum but no HMAC. Off
    /// unless an operator asks for it, for a file they know is theirs.
    pub allow_unauthenticated: bool,
}

/// Entries per batch while restoring; bounds memory on large backups.
const RESTORE_BATCH: usize = 10_000;
/// Bytes of keys and values per batch while restoring, for the same reason.
const RESTORE_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// Longest line a restore reads. The largest entries are uploaded plugin
/// components (64 MiB by default, about 86 MiB as base64); without a bound,
/// a file with no line breaks would be read into memory whole before any
/// check could refuse it. The host's other input limits live in its
/// `limits` module; this one is local to the backup format.
const MAX_LINE_BYTES: usize = 256 * 1024 * 1024;

/// The lines of a backup, numbered from 1, each at most [`MAX_LINE_BYTES`]
/// and UTF-8; a line that is neither ends the iteration with its error.
struct Lines<'a> {
    input: &'a mut dyn BufRead,
    no: usize,
    done: bool,
}

impl Iterator for Lines<'_> {
    type Item = (usize, Result<String, StorageError>);

    fn next(&mut self) -> Option<Self::Item> {
        use std::io::Read;
        if self.done {
            return None;
        }
        self.no += 1;
        let no = self.no;
        let mut buf = Vec::new();
        let read = (&mut *self.input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf);
        let bad = |detail: String| StorageError::BadBackup { line: no, detail };
        let line = match read {
            Ok(0) => {
                self.done = true;
                return None;
            }
            Err(e) => Err(StorageError::Io(e)),
            Ok(_) if buf.last() == Some(&b'\n') => {
                buf.pop();
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                String::from_utf8(buf).map_err(|_| bad("the line is not UTF-8".into()))
            }
            Ok(_) if buf.len() > MAX_LINE_BYTES => Err(bad(format!(
                "the line is longer than {MAX_LINE_BYTES} bytes, the limit"
            ))),
            Ok(_) => String::from_utf8(buf).map_err(|_| bad("the line is not UTF-8".into())),
        };
        self.done = line.is_err();
        Some((no, line))
    }
}

/// What a backup contains, as checked by its trailer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// Number of key-value entries.
    pub entries: u64,
    /// Schema version of the store the backup was taken from.
    pub schema_version: u32,
    /// Hex SHA-256 over the entry lines.
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    format_version: u32,
    schema_version: u32,
    created_unix: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    ks: String,
    k: String,
    v: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    end: End,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    entries: u64,
    sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hmac_sha256: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

impl Store {
    /// Writes a consistent snapshot of the whole store to `out`. Writers wait
    /// while it runs (reads do not), so export to a local file and ship that,
    /// rather than exporting straight to a slow network peer.
    /// The file is authenticated with `key`. `created_unix` is the time its
    /// header records, in seconds: the caller's clock, since this crate has
    /// none of its own.
    pub fn export(
        &self,
        out: &mut dyn Write,
        key: &BackupKey,
        created_unix: u64,
    ) -> Result<BackupSummary, StorageError> {
        let inner = self.inner();
        let mut guard = inner.writer.lock();
        // Other hosts' writers wait too, so the snapshot is consistent.
        self.take_lease(&mut guard)?;
        let result = self.export_locked(out, key, created_unix);
        self.release_lease_if_idle();
        result
    }

    fn export_locked(
        &self,
        out: &mut dyn Write,
        key: &BackupKey,
        created_unix: u64,
    ) -> Result<BackupSummary, StorageError> {
        let inner = self.inner();
        let schema_version = self.schema_version()?;
        let header = Header {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            schema_version,
            created_unix,
        };
        let header = serde_json::to_string(&header).map_err(std::io::Error::other)?;
        writeln!(out, "{header}")?;
        let mut mac = key.mac();
        mac.update(header.as_bytes());
        mac.update(b"\n");
        let mut hasher = Sha256::new();
        let mut entries = 0u64;
        for r in inner
            .backend
            .range(Bound::Unbounded, Bound::Unbounded, false)
        {
            let (full, v) = r?;
            let Some((ks, k)) = split(&full) else {
                return Err(StorageError::Corrupt {
                    keyspace: "?".into(),
                    detail: "key without keyspace".into(),
                });
            };
            let line = Line {
                ks: ks.to_string(),
                k: B64.encode(k),
                v: B64.encode(&v),
            };
            let mut text = serde_json::to_string(&line).expect("line encodes");
            text.push('\n');
            hasher.update(text.as_bytes());
            mac.update(text.as_bytes());
            out.write_all(text.as_bytes())?;
            entries += 1;
        }
        let sha256 = hex(&hasher.finalize());
        let trailer = Trailer {
            end: End {
                entries,
                sha256: sha256.clone(),
                hmac_sha256: Some(hex(&mac.finalize().into_bytes())),
            },
        };
        writeln!(
            out,
            "{}",
            serde_json::to_string(&trailer).expect("trailer encodes")
        )?;
        out.flush()?;
        Ok(BackupSummary {
            entries,
            schema_version,
            sha256,
        })
    }
}

/// Loads a backup into `dir`, which must not exist or be empty. The restore is
/// built in a sibling directory and moved into place only once the whole file
/// has been read and its trailer verified, so a failed restore leaves nothing.
/// The file must be authenticated with `verify.key` (see [`Verify`]).
///
/// With [`crate::Engine::Postgres`] the backup goes into the database named
/// by `options.url` instead, which must hold no Cohort data; a failed restore
/// deletes what it had written there.
pub fn restore_into(
    dir: &Path,
    input: &mut dyn BufRead,
    options: &OpenOptions,
    verify: Verify<'_>,
) -> Result<BackupSummary, StorageError> {
    if options.engine == crate::Engine::Postgres {
        return restore_into_database(input, options, verify);
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(StorageError::NotEmpty(dir.to_path_buf()));
    }
    let file_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let staging = dir.with_file_name(format!(".{file_name}.restoring-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let result = Store::open(&staging, options).and_then(|store| load(store, input, verify));
    match result {
        Ok(summary) => {
            if dir.exists() {
                std::fs::remove_dir(dir)?;
            }
            std::fs::rename(&staging, dir)?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn restore_into_database(
    input: &mut dyn BufRead,
    options: &OpenOptions,
    verify: Verify<'_>,
) -> Result<BackupSummary, StorageError> {
    let store = Store::open(Path::new(""), options)?;
    let target = || {
        options
            .url
            .as_deref()
            .map(crate::redact_url)
            .unwrap_or_default()
    };
    // Nobody else may write while the database is checked and filled.
    let backend = &store.inner().backend;
    backend.acquire_writer()?;
    let result = store.is_empty().and_then(|empty| {
        if !empty {
            return Err(StorageError::DatabaseNotEmpty(target()));
        }
        // Marked first, cleared with the end: a restore that dies half-way
        // leaves a database that no server opens (`Store::migrate`).
        let marker = crate::migrate::META.encode(crate::migrate::RESTORING);
        backend.apply_all(&[(marker.clone(), Some(b"1".to_vec()))])?;
        backend.flush()?;
        match load(store.clone(), input, verify) {
            Ok(summary) => {
                backend.apply_all(&[(marker, None)])?;
                backend.flush()?;
                Ok(summary)
            }
            Err(e) => {
                // Batches reached the database as the file was read; take
                // them out again, so that a failed restore leaves it empty.
                // A cleanup that fails too is logged; the restore's own
                // error is what the caller needs.
                let cleanup = backend
                    .range(Bound::Unbounded, Bound::Unbounded, false)
                    .map(|r| r.map(|(k, _)| (k, None)))
                    .collect::<Result<Vec<crate::backend::Write>, _>>()
                    .and_then(|keys| backend.apply_all(&keys))
                    .and_then(|()| backend.flush());
                match cleanup {
                    Ok(()) => tracing::warn!(target = %target(), "restore failed; what it had written was removed"),
                    Err(c) => tracing::error!(target = %target(), error = %c, "restore failed, and removing what it wrote failed too: drop the database and create it again"),
                }
                Err(e)
            }
        }
    });
    if let Err(e) = backend.release_writer() {
        tracing::warn!(error = %e, "giving back the writer lease failed");
    }
    result
}

/// Reads a backup into `store`, which is empty, checking it as it goes.
fn load(
    store: Store,
    input: &mut dyn BufRead,
    verify: Verify<'_>,
) -> Result<BackupSummary, StorageError> {
    let bad = |line: usize, detail: String| StorageError::BadBackup { line, detail };
    let mut lines = Lines {
        input,
        no: 0,
        done: false,
    };
    let (_, first) = lines.next().ok_or_else(|| bad(1, "empty file".into()))?;
    let first = first?;
    let header: Header = serde_json::from_str(&first)
        .map_err(|e| bad(1, format!("not a Cohort backup header: {e}")))?;
    if header.format != FORMAT {
        return Err(bad(
            1,
            format!("format is {:?}, expected {FORMAT:?}", header.format),
        ));
    }
    if header.format_version > FORMAT_VERSION {
        return Err(bad(
            1,
            format!(
                "backup format version {} is newer than this build understands ({FORMAT_VERSION})",
                header.format_version
            ),
        ));
    }

    let authenticated = header.format_version >= AUTHENTICATED_SINCE;
    if !authenticated && !verify.allow_unauthenticated {
        return Err(bad(
            1,
            format!(
                "backup format version {} is not authenticated (no HMAC), so it could have \
                 been edited; restore it only if you know where it came from, with \
                 --allow-unauthenticated",
                header.format_version
            ),
        ));
    }
    let mut mac = verify.key.mac();
    mac.update(first.as_bytes());
    mac.update(b"\n");

    let backend = &store.inner().backend;
    let mut hasher = Sha256::new();
    let mut entries = 0u64;
    let mut batch = Vec::with_capacity(RESTORE_BATCH);
    let mut batch_bytes = 0usize;
    let mut trailer = None;
    for (no, line) in lines.by_ref() {
        let text = line?;
        if text.starts_with("{\"end\"") {
            let t: Trailer =
                serde_json::from_str(&text).map_err(|e| bad(no, format!("bad trailer: {e}")))?;
            trailer = Some((no, t));
            break;
        }
        let entry: Line =
            serde_json::from_str(&text).map_err(|e| bad(no, format!("bad entry: {e}")))?;
        let key = B64
            .decode(&entry.k)
            .map_err(|e| bad(no, format!("bad key encoding: {e}")))?;
        let value = B64
            .decode(&entry.v)
            .map_err(|e| bad(no, format!("bad value encoding: {e}")))?;
        if entry.ks.is_empty() || entry.ks.contains('\0') {
            return Err(bad(no, "bad keyspace name".into()));
        }
        let mut full = Vec::with_capacity(entry.ks.len() + 1 + key.len());
        full.extend_from_slice(entry.ks.as_bytes());
        full.push(0);
        full.extend_from_slice(&key);
        hasher.update(text.as_bytes());
        hasher.update(b"\n");
        mac.update(text.as_bytes());
        mac.update(b"\n");
        batch_bytes += full.len() + value.len();
        batch.push((full, Some(value)));
        entries += 1;
        // Bounded in bytes as well as entries: the file is not yet
        // authenticated, and its lines may each be large.
        if batch.len() >= RESTORE_BATCH || batch_bytes >= RESTORE_BATCH_BYTES {
            backend.apply_all(&std::mem::take(&mut batch))?;
            batch_bytes = 0;
        }
    }
    let (no, trailer) = trailer.ok_or_else(|| {
        bad(
            entries as usize + 2,
            "missing trailer: the file is truncated".into(),
        )
    })?;
    if let Some((extra, _)) = lines.next() {
        return Err(bad(extra, "content after the trailer".into()));
    }
    let sha256 = hex(&hasher.finalize());
    if trailer.end.entries != entries {
        return Err(bad(
            no,
            format!(
                "trailer says {} entries, file has {entries}",
                trailer.end.entries
            ),
        ));
    }
    if trailer.end.sha256 != sha256 {
        return Err(bad(no, "checksum mismatch: the file is corrupt".into()));
    }
    if authenticated {
        let tag = trailer
            .end
            .hmac_sha256
            .as_deref()
            .and_then(unhex)
            .ok_or_else(|| bad(no, "the trailer has no valid hmac_sha256".into()))?;
        if mac.verify_slice(&tag).is_err() {
            return Err(bad(
                no,
                "the backup is not authentic: its HMAC does not match. It was changed after \
                 it was written, or written by a server with another secret key (restore it \
                 with that server's key)"
                    .into(),
            ));
        }
    }
    backend.apply_all(&batch)?;
    backend.flush()?;
    let schema_version = store.schema_version()?;
    drop(store);
    Ok(BackupSummary {
        entries,
        schema_version,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keyspace;

    /// The padded fixed-size key is the same HMAC key as the 32 bytes
    /// given as a slice.
    #[test]
    fn the_padded_key_is_the_same_key() {
        let key = BackupKey::new([7u8; 32]);
        let mut ours = key.mac();
        ours.update(b"line\n");
        let mut theirs = <HmacSha256 as KeyInit>::new_from_slice(&[7u8; 32]).unwrap();
        theirs.update(b"line\n");
        assert_eq!(ours.finalize().into_bytes(), theirs.finalize().into_bytes());
    }

    const KS: Keyspace = Keyspace::new("b");
    const KEY: BackupKey = BackupKey([9; 32]);
    const STRICT: Verify<'static> = Verify {
        key: &KEY,
        allow_unauthenticated: false,
    };

    fn sample() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("src"), &OpenOptions::default()).unwrap();
        store
            .write(|t| {
                for i in 0..100u32 {
                    t.put(KS, &i.to_be_bytes(), vec![0, 1, 2, (i % 256) as u8]);
                }
                Ok::<_, StorageError>(())
            })
            .unwrap()
            .durable_blocking()
            .unwrap();
        (dir, store)
    }

    #[test]
    fn hostile_lines_are_refused_with_their_line_number() {
        let (dir, store) = sample();
        let mut good = Vec::new();
        store.export(&mut good, &KEY, 1_764_000_000).unwrap();
        let header = good.split(|b| *b == b'\n').next().unwrap().to_vec();
        let cases: [&[u8]; 4] = [
            b"{\"ks\":\"b\",\"k\":\"\xff\xfe\",\"v\":\"\"}\n",
            &[b'['; 100_000],
            b"{\"ks\":\"b\",\"k\":1e999999,\"v\":\"\"}\n",
            b"{\"end\":{\"entries\":123456789012345678901234567890,\"sha256\":\"\"}}\n",
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut file = header.clone();
            file.push(b'\n');
            file.extend_from_slice(case);
            let target = dir.path().join(format!("hostile-{i}"));
            match restore_into(&target, &mut &file[..], &OpenOptions::default(), STRICT) {
                Err(StorageError::BadBackup { line: 2, .. }) => {}
                other => panic!("case {i}: {other:?}"),
            }
            assert!(
                !target.exists(),
                "case {i}: a failed restore leaves nothing"
            );
        }
    }

    #[test]
    fn round_trip_gives_identical_entries() {
        let (dir, store) = sample();
        let mut first = Vec::new();
        let summary = store.export(&mut first, &KEY, 1_764_000_000).unwrap();
        assert_eq!(summary.entries, 100);
        let target = dir.path().join("restored");
        let restored =
            restore_into(&target, &mut &first[..], &OpenOptions::default(), STRICT).unwrap();
        assert_eq!(restored.sha256, summary.sha256);
        let again = Store::open(&target, &OpenOptions::default()).unwrap();
        let mut second = Vec::new();
        assert_eq!(
            again
                .export(&mut second, &KEY, 1_764_000_000)
                .unwrap()
                .sha256,
            summary.sha256
        );
    }

    #[test]
    fn truncated_or_tampered_backups_are_refused_and_leave_nothing() {
        let (dir, store) = sample();
        let mut full = Vec::new();
        store.export(&mut full, &KEY, 1_764_000_000).unwrap();
        let text = String::from_utf8(full).unwrap();
        let truncated: String = text.lines().take(50).map(|l| format!("{l}\n")).collect();
        let target = dir.path().join("t1");
        let err = restore_into(
            &target,
            &mut truncated.as_bytes(),
            &OpenOptions::default(),
            STRICT,
        )
        .unwrap_err();
        assert!(matches!(err, StorageError::BadBackup { .. }), "{err}");
        assert!(!target.exists());

        let tampered = text.replacen("\"v\":\"AAEC", "\"v\":\"AAED", 1);
        let err = restore_into(
            &target,
            &mut tampered.as_bytes(),
            &OpenOptions::default(),
            STRICT,
        )
        .unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn restore_refuses_a_non_empty_directory() {
        let (dir, store) = sample();
        let mut full = Vec::new();
        store.export(&mut full, &KEY, 1_764_000_000).unwrap();
        let err = restore_into(
            &dir.path().join("src"),
            &mut &full[..],
            &OpenOptions::default(),
            STRICT,
        )
        .unwrap_err();
        assert!(matches!(err, StorageError::NotEmpty(_)));
    }

    /// `text` with its entry checksum recomputed, as someone editing the
    /// file would.
    fn fix_checksum(text: &str) -> String {
        let lines: Vec<&str> = text.lines().collect();
        let mut hasher = Sha256::new();
        for l in &lines[1..lines.len() - 1] {
            hasher.update(l.as_bytes());
            hasher.update(b"\n");
        }
        let mut trailer: Trailer = serde_json::from_str(lines[lines.len() - 1]).unwrap();
        trailer.end.sha256 = hex(&hasher.finalize());
        let mut out: String = lines[..lines.len() - 1]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        out.push_str(&serde_json::to_string(&trailer).unwrap());
        out.push('\n');
        out
    }

    #[test]
    fn an_edited_backup_with_a_fixed_checksum_or_another_key_is_refused() {
        let (dir, store) = sample();
        let mut full = Vec::new();
        store.export(&mut full, &KEY, 1_764_000_000).unwrap();
        let text = String::from_utf8(full).unwrap();
        let target = dir.path().join("t");
        // The edit and its checksum fix alone restore.
        let edited = fix_checksum(&text.replacen("\"v\":\"AAEC", "\"v\":\"AAED", 1));
        let lenient = Verify {
            key: &KEY,
            allow_unauthenticated: true,
        };
        for verify in [STRICT, lenient] {
            let err = restore_into(
                &target,
                &mut edited.as_bytes(),
                &OpenOptions::default(),
                verify,
            )
            .unwrap_err();
            assert!(err.to_string().contains("not authentic"), "{err}");
            assert!(!target.exists());
        }
        // So does the header's.
        let edited = text.replacen("\"schema_version\":", "\"schema_version\":1", 1);
        assert!(
            restore_into(
                &target,
                &mut edited.as_bytes(),
                &OpenOptions::default(),
                STRICT
            )
            .is_err()
        );
        // Another server's key.
        let other = BackupKey([8; 32]);
        let verify = Verify {
            key: &other,
            allow_unauthenticated: false,
        };
        let err = restore_into(
            &target,
            &mut text.as_bytes(),
            &OpenOptions::default(),
            verify,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not authentic"), "{err}");
        // A trailer with the HMAC removed does not pass for version 1.
        let stripped = text.replace(",\"hmac_sha256\":", ",\"x\":");
        assert!(
            restore_into(
                &target,
                &mut stripped.as_bytes(),
                &OpenOptions::default(),
                lenient
            )
            .is_err()
        );
        assert!(!target.exists());
        restore_into(
            &target,
            &mut text.as_bytes(),
            &OpenOptions::default(),
            STRICT,
        )
        .unwrap();
    }

    #[test]
    fn version_1_backups_need_the_explicit_flag() {
        let (dir, store) = sample();
        let mut full = Vec::new();
        store.export(&mut full, &KEY, 1_764_000_000).unwrap();
        let text = String::from_utf8(full).unwrap();
        // What a version 1 build wrote: no HMAC in the trailer.
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines[0] = lines[0].replace("\"format_version\":2", "\"format_version\":1");
        let last = lines.len() - 1;
        let mut trailer: Trailer = serde_json::from_str(&lines[last]).unwrap();
        trailer.end.hmac_sha256 = None;
        lines[last] = serde_json::to_string(&trailer).unwrap();
        let v1: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let target = dir.path().join("v1");
        let err =
            restore_into(&target, &mut v1.as_bytes(), &OpenOptions::default(), STRICT).unwrap_err();
        assert!(err.to_string().contains("--allow-unauthenticated"), "{err}");
        assert!(!target.exists());
        let lenient = Verify {
            key: &KEY,
            allow_unauthenticated: true,
        };
        let restored = restore_into(
            &target,
            &mut v1.as_bytes(),
            &OpenOptions::default(),
            lenient,
        )
        .unwrap();
        assert_eq!(restored.entries, 100);
    }
}
