//! The store's promises, on every engine.

use super::*;

const KS: Keyspace = Keyspace::new("t");
const OTHER: Keyspace = Keyspace::new("t2");

/// Options for `engine`; for PostgreSQL, a new database on the test
/// server each call.
fn options(engine: Engine) -> OpenOptions {
    OpenOptions {
        engine,
        url: (engine == Engine::Postgres).then(cohort_tests::postgres::fresh_database),
        connections: 2,
        ..OpenOptions::default()
    }
}

fn open(engine: Engine) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &options(engine)).unwrap();
    (dir, store)
}

fn keys(store: &Store, prefix: &[u8], after: Option<&[u8]>, reverse: bool) -> Vec<Vec<u8>> {
    store
        .scan(KS, prefix, after, reverse)
        .map(|r| r.unwrap().0)
        .collect()
}

async fn write_is_visible_and_durable(engine: Engine) {
    let (_dir, store) = open(engine);
    let c = store
        .write(|t| {
            t.put(KS, b"a", b"1".to_vec());
            Ok::<_, StorageError>(7)
        })
        .unwrap();
    assert_eq!(c.durable().await.unwrap(), 7);
    assert_eq!(store.get(KS, b"a").unwrap(), Some(b"1".to_vec()));
}

fn failed_transaction_writes_nothing(engine: Engine) {
    let (_dir, store) = open(engine);
    let r = store.write(|t| {
        t.put(KS, b"a", b"1".to_vec());
        Err::<(), _>(StorageError::Engine("boom".into()))
    });
    assert!(r.is_err());
    assert_eq!(store.get(KS, b"a").unwrap(), None);
}

fn scans_stay_inside_their_keyspace_and_resume_after_cursor(engine: Engine) {
    let (_dir, store) = open(engine);
    store
        .write(|t| {
            for k in [&b"a1"[..], b"a2", b"a3", b"b1"] {
                t.put(KS, k, vec![]);
            }
            t.put(OTHER, b"a1", vec![]);
            Ok::<_, StorageError>(())
        })
        .unwrap()
        .durable_blocking()
        .unwrap();
    assert_eq!(
        keys(&store, b"a", None, false),
        vec![b"a1".to_vec(), b"a2".to_vec(), b"a3".to_vec()]
    );
    assert_eq!(
        keys(&store, b"a", Some(b"a1"), false),
        vec![b"a2".to_vec(), b"a3".to_vec()]
    );
    assert_eq!(
        keys(&store, b"a", Some(b"a3"), true),
        vec![b"a2".to_vec(), b"a1".to_vec()]
    );
    assert_eq!(keys(&store, b"", None, true).len(), 4);
}

fn checkpoints_apply_early_and_aborts_are_reported(engine: Engine) {
    let (_dir, store) = open(engine);
    let aborted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&aborted);
    let r = store.write(|t| {
        t.on_abort(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
        t.put(KS, b"a", b"1".to_vec());
        t.checkpoint()?;
        assert_eq!(t.pending_writes(), 0);
        assert_eq!(t.get(KS, b"a")?, Some(b"1".to_vec()));
        t.put(KS, b"b", b"2".to_vec());
        Err::<(), _>(StorageError::Engine("later failure".into()))
    });
    assert!(r.is_err());
    assert!(aborted.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(store.get(KS, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(store.get(KS, b"b").unwrap(), None);

    // A transaction whose writes all went out at a checkpoint still
    // waits for durability, and commit runs no abort callback.
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f2 = std::sync::Arc::clone(&flag);
    store
        .write(|t| {
            t.on_abort(move || f2.store(true, std::sync::atomic::Ordering::SeqCst));
            t.put(KS, b"c", b"3".to_vec());
            t.checkpoint()
        })
        .unwrap()
        .durable_blocking()
        .unwrap();
    assert!(!flag.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(store.get(KS, b"c").unwrap(), Some(b"3".to_vec()));
}

fn transaction_scans_merge_their_own_writes_in_order(engine: Engine) {
    let (_dir, store) = open(engine);
    store
        .write(|t| {
            for k in [&b"a1"[..], b"a3", b"a5"] {
                t.put(KS, k, b"old".to_vec());
            }
            t.put(OTHER, b"a2", vec![]);
            Ok::<_, StorageError>(())
        })
        .unwrap()
        .durable_blocking()
        .unwrap();
    store
        .write(|t| {
            t.put(KS, b"a0", b"new".to_vec());
            t.put(KS, b"a3", b"new".to_vec());
            t.delete(KS, b"a5");
            t.put(KS, b"a4", b"new".to_vec());
            t.put(KS, b"b1", b"new".to_vec());
            let seen: Vec<(String, String)> = t
                .scan_prefix(KS, b"a")?
                .into_iter()
                .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
                .collect();
            let expected: Vec<(String, String)> =
                [("a0", "new"), ("a1", "old"), ("a3", "new"), ("a4", "new")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            assert_eq!(seen, expected);
            Ok::<_, StorageError>(())
        })
        .unwrap()
        .durable_blocking()
        .unwrap();
}

fn sequences_follow_commits_and_survive_reopen(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(engine);
    let append = |store: &Store, fail: bool| {
        store.write(|t| {
            let n = t.next_sequence(KS)?;
            let m = t.next_sequence(KS)?;
            assert_eq!(m, n + 1);
            t.put(KS, &n.to_be_bytes(), vec![]);
            t.put(KS, &m.to_be_bytes(), vec![]);
            if fail {
                return Err(StorageError::Engine("abort".into()));
            }
            Ok(n)
        })
    };
    {
        let store = Store::open(dir.path(), &opts).unwrap();
        assert_eq!(
            append(&store, false).unwrap().durable_blocking().unwrap(),
            1
        );
        assert!(append(&store, true).is_err());
        assert_eq!(
            append(&store, false).unwrap().durable_blocking().unwrap(),
            3
        );
    }
    let store = Store::open(dir.path(), &opts).unwrap();
    assert_eq!(
        append(&store, false).unwrap().durable_blocking().unwrap(),
        5
    );
}

fn data_survives_reopen(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(engine);
    {
        let store = Store::open(dir.path(), &opts).unwrap();
        store
            .write(|t| {
                t.put(KS, b"k", b"v".to_vec());
                Ok::<_, StorageError>(())
            })
            .unwrap()
            .durable_blocking()
            .unwrap();
    }
    let store = Store::open(dir.path(), &opts).unwrap();
    assert_eq!(store.get(KS, b"k").unwrap(), Some(b"v".to_vec()));
}

/// Every promise holds on every engine.
macro_rules! on_each_engine {
    ($engine:ident, $variant:expr) => {
        mod $engine {
            use super::*;

            #[tokio::test]
            async fn write_is_visible_and_durable() {
                super::write_is_visible_and_durable($variant).await
            }

            #[test]
            fn failed_transaction_writes_nothing() {
                super::failed_transaction_writes_nothing($variant)
            }

            #[test]
            fn scans_stay_inside_their_keyspace_and_resume_after_cursor() {
                super::scans_stay_inside_their_keyspace_and_resume_after_cursor($variant)
            }

            #[test]
            fn checkpoints_apply_early_and_aborts_are_reported() {
                super::checkpoints_apply_early_and_aborts_are_reported($variant)
            }

            #[test]
            fn transaction_scans_merge_their_own_writes_in_order() {
                super::transaction_scans_merge_their_own_writes_in_order($variant)
            }

            #[test]
            fn sequences_follow_commits_and_survive_reopen() {
                super::sequences_follow_commits_and_survive_reopen($variant)
            }

            #[test]
            fn data_survives_reopen() {
                super::data_survives_reopen($variant)
            }

            #[test]
            fn prefetched_reads_answer_as_plain_reads() {
                super::prefetched_reads_answer_as_plain_reads($variant)
            }

            #[test]
            fn rehearsals_write_nothing_and_savepoints_undo() {
                super::rehearsals_write_nothing_and_savepoints_undo($variant)
            }
        }
    };
}

/// A rehearsal reads like a transaction and writes nothing, not even by a
/// checkpoint, and holds no lock: a real write made while it runs lands,
/// and the rehearsal sees it. A savepoint undoes the writes and gives back
/// the sequence numbers taken after it, and keeps those before it.
fn rehearsals_write_nothing_and_savepoints_undo(engine: Engine) {
    let (_dir, store) = open(engine);
    let put = |k: &[u8], v: &[u8]| {
        store
            .write(|t| {
                t.put(KS, k, v.to_vec());
                Ok::<_, StorageError>(())
            })
            .unwrap()
            .durable_blocking()
            .unwrap();
    };
    put(b"a", b"1");
    let aborted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = store
        .rehearse(|t| {
            let flag = std::sync::Arc::clone(&aborted);
            t.on_abort(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
            t.put(KS, b"b", b"2".to_vec());
            assert_eq!(t.next_sequence(OTHER)?, 1);
            let point = t.savepoint();
            t.put(KS, b"a", b"changed".to_vec());
            t.delete(KS, b"b");
            t.put(KS, b"c", b"3".to_vec());
            assert_eq!(t.next_sequence(OTHER)?, 2);
            t.roll_back_to(point);
            assert_eq!(t.get(KS, b"a")?, Some(b"1".to_vec()));
            assert_eq!(t.get(KS, b"b")?, Some(b"2".to_vec()));
            assert_eq!(t.get(KS, b"c")?, None);
            assert_eq!(
                t.next_sequence(OTHER)?,
                2,
                "a rolled-back number is given again"
            );
            let point = t.savepoint();
            t.put(KS, b"d", b"4".to_vec());
            t.release(point);
            t.checkpoint()?;
            // Another writer is not held back, and its commit is seen.
            put(b"e", b"5");
            Ok::<_, StorageError>(
                t.scan_prefix(KS, b"")?
                    .into_iter()
                    .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
                    .collect::<Vec<_>>(),
            )
        })
        .unwrap();
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        seen,
        vec![
            pair("a", "1"),
            pair("b", "2"),
            pair("d", "4"),
            pair("e", "5")
        ]
    );
    assert!(aborted.load(std::sync::atomic::Ordering::SeqCst));
    // Savepoints nest: closing an inner one keeps the outer one's record,
    // even when nothing was written between them.
    store
        .rehearse(|t| {
            let outer = t.savepoint();
            let inner = t.savepoint();
            t.release(inner);
            t.put(KS, b"x", b"1".to_vec());
            t.put(KS, b"x", b"2".to_vec());
            let inner = t.savepoint();
            t.delete(KS, b"a");
            t.roll_back_to(inner);
            assert_eq!(t.get(KS, b"a")?, Some(b"1".to_vec()));
            assert_eq!(t.get(KS, b"x")?, Some(b"2".to_vec()));
            t.roll_back_to(outer);
            assert_eq!(t.get(KS, b"x")?, None);
            Ok::<_, StorageError>(())
        })
        .unwrap();
    // Nothing of the rehearsal is stored, and the numbering starts at 1.
    assert_eq!(
        keys(&store, b"", None, false),
        vec![b"a".to_vec(), b"e".to_vec()]
    );
    store
        .write(|t| {
            assert_eq!(t.next_sequence(OTHER)?, 1);
            Ok::<_, StorageError>(())
        })
        .unwrap()
        .durable_blocking()
        .unwrap();
}

/// A prefetch changes no answer: present and absent keys, whole ranges,
/// and the transaction's own writes over both; also again from what the
/// engine kept (PostgreSQL's cache under the lease).
fn prefetched_reads_answer_as_plain_reads(engine: Engine) {
    let (_dir, store) = open(engine);
    store
        .write(|t| {
            for k in [&b"p1"[..], b"p2", b"q1"] {
                t.put(KS, k, k.to_vec());
            }
            Ok::<_, StorageError>(())
        })
        .unwrap()
        .durable_blocking()
        .unwrap();
    for round in 0..2 {
        store
            .write(|t| {
                t.put(KS, b"p3", b"new".to_vec());
                t.delete(KS, b"q1");
                t.prefetch(
                    &[(KS, b"p1"), (KS, b"zz"), (KS, b"p3"), (KS, b"q1")],
                    &[(KS, b"p"), (KS, b"q"), (KS, b"none"), (OTHER, b"p")],
                )?;
                assert_eq!(t.get(KS, b"p1")?, Some(b"p1".to_vec()), "round {round}");
                assert_eq!(t.get(KS, b"zz")?, None);
                assert_eq!(t.get(KS, b"p3")?, Some(b"new".to_vec()));
                assert_eq!(t.get(KS, b"q1")?, None);
                let p: Vec<Vec<u8>> = t.scan_prefix(KS, b"p")?.into_iter().map(|e| e.0).collect();
                assert_eq!(p, [&b"p1"[..], b"p2", b"p3"]);
                assert!(t.scan_prefix(KS, b"q")?.is_empty());
                assert!(t.scan_prefix(KS, b"none")?.is_empty());
                assert!(t.scan_prefix(OTHER, b"p")?.is_empty());
                Err::<(), _>(StorageError::Engine("roll back".into()))
            })
            .err()
            .unwrap();
    }
    // What the refused transactions wrote never reached the engine's cache.
    assert_eq!(store.get(KS, b"p3").unwrap(), None);
    assert_eq!(store.get(KS, b"q1").unwrap(), Some(b"q1".to_vec()));
    let p: Vec<Vec<u8>> = keys(&store, b"p", None, true);
    assert_eq!(p, [&b"p2"[..], b"p1"]);
}

on_each_engine!(fjall, Engine::Fjall);
on_each_engine!(sled, Engine::Sled);
on_each_engine!(postgres, Engine::Postgres);

/// Two stores on one database are two hosts: a uniqueness check and
/// the write it guards never interleave with the other host's, and
/// sequence numbers continue where the other host left off.
#[test]
fn two_hosts_on_one_database_take_turns_and_share_sequences() {
    let opts = options(Engine::Postgres);
    let a = Store::open(Path::new(""), &opts).unwrap();
    let b = Store::open(Path::new(""), &opts).unwrap();
    let threads: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(host, store)| {
            std::thread::spawn(move || {
                let mut won = 0;
                for i in 0..40u32 {
                    // Read-modify-write of one counter, and a claim that
                    // only one host may make per round.
                    let claimed = store
                        .write(|t| {
                            let n: u64 = t.get_json(KS, b"counter")?.unwrap_or(0);
                            t.put_json(KS, b"counter", &(n + 1))?;
                            let seq = t.next_sequence(OTHER)?;
                            t.put(OTHER, &seq.to_be_bytes(), vec![host as u8]);
                            let round = format!("round-{i}");
                            if t.get(KS, round.as_bytes())?.is_some() {
                                return Ok(false);
                            }
                            t.put(KS, round.as_bytes(), vec![host as u8]);
                            Ok::<_, StorageError>(true)
                        })
                        .unwrap()
                        .durable_blocking()
                        .unwrap();
                    won += u32::from(claimed);
                }
                won
            })
        })
        .collect();
    let won: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(won, 40, "each round is claimed exactly once");
    assert_eq!(a.get_json::<u64>(KS, b"counter").unwrap(), Some(80));
    assert_eq!(b.get_json::<u64>(KS, b"counter").unwrap(), Some(80));
    let seqs: Vec<u64> = b
        .scan(OTHER, b"", None, false)
        .map(|r| u64::from_be_bytes(r.unwrap().0.try_into().unwrap()))
        .collect();
    assert_eq!(seqs, (1..=80).collect::<Vec<_>>(), "no number given twice");
}

#[test]
fn a_directory_is_opened_only_by_the_engine_that_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), &options(Engine::Sled)).unwrap());
    let err = Store::open(dir.path(), &options(Engine::Fjall))
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            StorageError::WrongEngine {
                found: "sled",
                configured: "fjall",
                ..
            }
        ),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), &options(Engine::Fjall)).unwrap());
    let err = Store::open(dir.path(), &options(Engine::Sled))
        .err()
        .unwrap();
    assert!(err.to_string().contains("holds a fjall store"), "{err}");
}

/// What a host keeps in memory under the writer lease is dropped when
/// another host wrote in between: reads in and out of transactions, points
/// and ranges, see the other host's writes. A refused write gives the lease
/// back, or the other host's writes would wait for it.
#[test]
#[allow(clippy::disallowed_methods)] // Timing a lock wait, not domain time.
fn a_host_never_answers_from_memory_what_another_host_changed() {
    let opts = options(Engine::Postgres);
    let a = Store::open(Path::new(""), &opts).unwrap();
    let b = Store::open(Path::new(""), &opts).unwrap();
    let put = |s: &Store, k: &[u8], v: &[u8]| {
        s.write(|t| {
            t.put(KS, k, v.to_vec());
            Ok::<_, StorageError>(())
        })
        .unwrap()
        .durable_blocking()
        .unwrap();
    };
    put(&a, b"k", b"1");
    let read = |s: &Store| {
        s.write(|t| {
            let v = t.get(KS, b"k")?;
            let r: Vec<Vec<u8>> = t.scan_prefix(KS, b"")?.into_iter().map(|e| e.0).collect();
            Err::<(), _>(StorageError::Engine(format!("{v:?} {r:?}")))
        })
        .err()
        .unwrap()
        .to_string()
    };
    for round in 0..3 {
        // Past the linger after a flush: `a` has given the lease back, and
        // the refused transaction below takes it anew.
        std::thread::sleep(crate::durability::LINGER * 10);
        let seen = read(&a);
        assert!(seen.contains("Some([49])"), "round {round}: {seen}");
        // Would wait 30 s for the lock, and fail, if the refused
        // transaction above kept the lease.
        let started = std::time::Instant::now();
        put(&b, b"k", b"2");
        put(&b, format!("n{round}").as_bytes(), b"");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let seen = read(&a);
        assert!(seen.contains("Some([50])"), "round {round}: {seen}");
        assert!(
            seen.contains(&format!("{:?}", format!("n{round}").as_bytes())),
            "round {round}: {seen}"
        );
        assert_eq!(a.get(KS, b"k").unwrap(), Some(b"2".to_vec()));
        put(&a, b"k", b"1");
    }
}

/// A database that went back in history (restored to an earlier point, or
/// failed over to a replica that missed the last commits) and then reached
/// the same generation through another host's write is not mistaken for
/// the history this host cached: the stamp tells them apart.
#[test]
#[allow(clippy::disallowed_methods)] // Waiting out the lease's linger.
fn a_history_that_reached_the_same_generation_again_is_not_trusted() {
    let opts = options(Engine::Postgres);
    let a = Store::open(Path::new(""), &opts).unwrap();
    let b = Store::open(Path::new(""), &opts).unwrap();
    let put = |s: &Store, v: &[u8]| {
        s.write(|t| {
            t.put(KS, b"name", v.to_vec());
            Ok::<_, StorageError>(())
        })
        .unwrap()
        .durable_blocking()
        .unwrap();
    };
    put(&a, b"a");
    // `a` read and kept it under the lease; then gives the lease back.
    assert_eq!(a.get(KS, b"name").unwrap(), Some(b"a".to_vec()));
    std::thread::sleep(crate::durability::LINGER * 10);
    // The database loses `a`'s commit, as a failover to a lagging replica
    // would: one generation back, the key as it was before.
    let mut sql =
        ::postgres::Client::connect(opts.url.as_deref().unwrap(), ::postgres::NoTls).unwrap();
    sql.execute(
        "UPDATE cohort_meta SET generation = generation - 1, stamp = 0 WHERE id = 1",
        &[],
    )
    .unwrap();
    sql.execute("DELETE FROM cohort_kv WHERE k = $1", &[&KS.encode(b"name")])
        .unwrap();
    // Host `b` writes, and the generation is where `a` last saw it.
    put(&b, b"b");
    let seen = a
        .write(|t| Err::<(), _>(StorageError::Engine(format!("{:?}", t.get(KS, b"name")?))))
        .err()
        .unwrap()
        .to_string();
    assert!(seen.contains("[98]"), "{seen}");
}

/// `sslmode=require` is honoured: against the test server, which offers no
/// TLS, the connection is refused rather than made in the clear.
#[test]
fn postgres_refuses_a_clear_connection_when_tls_is_required() {
    let url = format!(
        "{}?sslmode=require",
        cohort_tests::postgres::fresh_database()
    );
    let opts = OpenOptions {
        engine: Engine::Postgres,
        url: Some(url),
        connections: 1,
        ..OpenOptions::default()
    };
    let err = Store::open(Path::new(""), &opts).err().unwrap().to_string();
    assert!(err.to_lowercase().contains("tls"), "{err}");
    // The same database in the default mode (`prefer`) connects in the clear.
    let mut prefer = opts.clone();
    prefer.url = prefer.url.map(|u| u.replace("?sslmode=require", ""));
    Store::open(Path::new(""), &prefer).unwrap();
}

/// A rate bucket is one for every host on the database, with the GCRA
/// arithmetic: a burst of `tolerance / interval + 1`, then one per
/// interval; the embedded engines have none.
#[test]
fn rate_buckets_are_shared_between_hosts() {
    let opts = options(Engine::Postgres);
    let a = Store::open(Path::new(""), &opts).unwrap();
    let b = Store::open(Path::new(""), &opts).unwrap();
    let (interval, tolerance) = (1_000_000, 2_000_000); // 3 at once, then 1/s
    let now = 1_700_000_000_000_000i64;
    let take = |s: &Store, at: i64| s.take_rate(b"k", at, interval, tolerance).unwrap().unwrap();
    assert_eq!(take(&a, now), crate::RateDecision::Allowed);
    assert_eq!(take(&b, now), crate::RateDecision::Allowed);
    assert_eq!(take(&a, now), crate::RateDecision::Allowed);
    // The fourth, from either host, waits until the first refills.
    assert_eq!(take(&b, now), crate::RateDecision::Wait(1_000_000));
    assert_eq!(take(&a, now + 400_000), crate::RateDecision::Wait(600_000));
    assert_eq!(take(&b, now + 1_000_000), crate::RateDecision::Allowed);
    // Another key has its own bucket; spent buckets are swept.
    assert_eq!(
        a.take_rate(b"other", now, interval, tolerance).unwrap(),
        Some(crate::RateDecision::Allowed)
    );
    assert_eq!(a.sweep_rates(now + 10_000_000).unwrap(), 2);
    let (_dir, embedded) = open(Engine::Fjall);
    assert_eq!(
        embedded.take_rate(b"k", now, interval, tolerance).unwrap(),
        None
    );
}

/// Each host has a number of its own that the others see alive while it
/// runs and gone once it stops, and takes back after its session to the
/// database broke; the embedded engines know only their own process, so an
/// earlier process's number is gone.
#[test]
#[allow(clippy::disallowed_methods)] // Waiting for the server to end sessions.
fn hosts_see_each_other_alive_until_one_stops() {
    let opts = options(Engine::Postgres);
    let a = Store::open(Path::new(""), &opts).unwrap();
    let b = Store::open(Path::new(""), &opts).unwrap();
    let (a_number, b_number) = (a.host(), b.host());
    assert_ne!(a_number, b_number);
    assert!(a_number <= i32::MAX as u32 && b_number <= i32::MAX as u32);
    assert!(a.host_alive(b_number).unwrap());
    assert!(b.host_alive(a_number).unwrap());
    // A number nobody took is free, and asking about it takes nothing:
    // the other host, on sessions of its own, finds it free too.
    let free = (1..)
        .map(|i| a_number.wrapping_add(i))
        .find(|n| *n != b_number)
        .unwrap();
    for _ in 0..4 {
        assert!(!a.host_alive(free).unwrap());
        assert!(!b.host_alive(free).unwrap());
    }
    assert!(a.host_alive(b_number).unwrap());
    let until = |what: &str, done: &dyn Fn() -> bool| {
        let started = std::time::Instant::now();
        while !done() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{what} after 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    // Every session of both hosts ends (a database restart, say): `a`'s
    // number is free until it next asks for its roles, and then its own
    // again.
    let url = opts.url.clone().unwrap();
    let mut admin = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    until("a's number is still held with its session gone", &|| {
        !b.host_alive(a_number).unwrap()
    });
    a.lead("role").unwrap();
    assert!(b.host_alive(a_number).unwrap());
    b.lead("role").unwrap();
    assert!(a.host_alive(b_number).unwrap());
    drop(b);
    until("a stopped host still counts as alive", &|| {
        !a.host_alive(b_number).unwrap()
    });

    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path(), &options(Engine::Fjall)).unwrap();
    let earlier = first.host();
    assert!(first.host_alive(earlier).unwrap());
    drop(first);
    let second = Store::open(dir.path(), &options(Engine::Fjall)).unwrap();
    assert_ne!(second.host(), earlier);
    assert!(!second.host_alive(earlier).unwrap());
}
