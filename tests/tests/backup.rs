//! Online backup with `cohort backup`, restore with `cohort restore`, and a
//! round trip that gives an identical directory. Also: SIGTERM shuts down
//! cleanly and keeps every acknowledged write.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use std::process::Command;

use cohort_tests::{ADMIN_KEY, Api, Server, cohort_bin, cohort_command};
use serde_json::{Value, json};

/// Everything a client can read, in a comparable form.
async fn snapshot(api: &Api) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "/api/v1/users?limit=500",
        "/api/v1/devices?limit=500",
        "/api/v1/attributes",
        "/api/v1/audit?limit=500",
        "/api/v1/api-keys",
    ] {
        out.push(api.get(path).await.expect(200).body);
    }
    let users = out[0]["items"].as_array().unwrap().clone();
    for u in users {
        let id = u["id"].as_str().unwrap();
        out.push(
            api.get(&format!("/api/v1/users/{id}/devices"))
                .await
                .expect(200)
                .body,
        );
    }
    out
}

/// `cohort args…`, on the storage of the `--data-dir` it names.
fn command(args: &[&str]) -> Command {
    let data = args
        .iter()
        .position(|a| *a == "--data-dir")
        .and_then(|i| args.get(i + 1))
        .map(std::path::Path::new);
    let mut c = cohort_command(data);
    c.args(args);
    c
}

fn run(args: &[&str]) -> std::process::Output {
    let out = command(args).output().expect("run cohort");
    assert!(
        out.status.success(),
        "cohort {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn backup_while_running_then_restore_gives_an_identical_directory() {
    let mut s = Server::start();
    let api = s.admin();
    api.post(
        "/api/v1/attributes",
        json!({"name": "badge", "subject": "user", "type": "number"}),
    )
    .await
    .expect(201);
    for i in 0..30 {
        let u = api
            .post(
                "/api/v1/users",
                json!({"username": format!("u{i}"), "email": format!("u{i}@example.com"), "custom_attributes": {"badge": i}}),
            )
            .await
            .expect(201);
        if i % 3 == 0 {
            let d = api
                .post(
                    "/api/v1/devices",
                    json!({"hostname": format!("d{i}"), "os_family": "linux"}),
                )
                .await
                .expect(201);
            api.put(&format!(
                "/api/v1/users/{}/devices/{}",
                u.body["id"].as_str().unwrap(),
                d.body["id"].as_str().unwrap()
            ))
            .await
            .expect(201);
        }
    }
    let before = snapshot(&api).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cohort.backup");
    run(&[
        "backup",
        "--output",
        file.to_str().unwrap(),
        "--server",
        &s.base,
        "--api-key",
        ADMIN_KEY,
    ]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("{\"format\":\"cohort-backup\""));

    // The server kept serving; now restore into a fresh directory, with
    // the key that authenticates the backup.
    let restored = dir.path().join("restored");
    let key = s.data_dir().join("secret.key");
    run(&[
        "restore",
        "--input",
        file.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
    ]);
    // The key came along, so the copy reads what the original sealed.
    assert_eq!(
        std::fs::read(restored.join("secret.key")).unwrap(),
        std::fs::read(&key).unwrap()
    );
    // Restoring over a non-empty directory is refused.
    let again = command(&[
        "restore",
        "--input",
        file.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    s.kill();
    let copy = Server::start_on(&restored, dir.path().join("restored.log"));
    let after = snapshot(&copy.admin()).await;
    assert_eq!(before, after);
    // The restored copy is a working directory, not a read-only image.
    copy.admin().create_user("after-restore").await;
    let dup = copy
        .admin()
        .post(
            "/api/v1/users",
            json!({"username": "u0", "email": "fresh@example.com"}),
        )
        .await
        .expect(409);
    assert_eq!(dup.code(), "username_taken");
}

#[tokio::test]
async fn restored_indexes_still_enforce_uniqueness() {
    let mut s = Server::start();
    s.admin().create_user("unique").await;
    // The start-up recompute writes its run record in the background: done
    // before the online backup, so the offline one after it finds the same.
    s.admin().recompute().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    run(&[
        "backup",
        "--output",
        file.to_str().unwrap(),
        "--server",
        &s.base,
        "--api-key",
        ADMIN_KEY,
    ]);
    s.kill();
    // Offline backup of the stopped server matches the online one, entry for entry.
    let offline = dir.path().join("b2");
    let out = cohort_command(Some(s.data_dir()))
        .args(["backup", "--offline", "--output", offline.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The HMAC covers the header (and its time), so it differs; the
    // entries and their checksum do not.
    let body = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| match serde_json::from_str::<Value>(l) {
                Ok(mut t) if t.get("end").is_some() => {
                    t["end"]["hmac_sha256"] = Value::Null;
                    t.to_string()
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(body(&file), body(&offline));

    let restored = dir.path().join("r");
    run(&[
        "restore",
        "--input",
        file.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
        "--key-file",
        s.data_dir().join("secret.key").to_str().unwrap(),
    ]);
    let copy = Server::start_on(&restored, dir.path().join("log"));
    let r = copy
        .admin()
        .post(
            "/api/v1/users",
            json!({"username": "UNIQUE", "email": "other@example.com"}),
        )
        .await
        .expect(409);
    assert_eq!(r.code(), "username_taken");
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_keeps_acknowledged_writes() {
    let mut s = Server::start();
    let api = s.admin();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            api.create_user(&format!("t{i}")).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let status = s.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        s.log()
    );
    let dir = s.data_dir().to_path_buf();
    let log = dir.parent().unwrap().join("again.log");
    let again = Server::start_on(&dir, log);
    for id in ids {
        again
            .admin()
            .get(&format!("/api/v1/users/{id}"))
            .await
            .expect(200);
    }
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(cohort_bin())
        .args(args)
        .env_remove("COHORT_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("run cohort")
}

/// A server on `engine` given `n` users, then stopped cleanly; with what a
/// client could read from it before it stopped.
async fn stopped_with_users(engine: &str, prefix: &str, n: usize) -> (Server, Vec<Value>) {
    let mut s = Server::start_with(&[("COHORT_STORAGE_ENGINE", engine)]);
    let api = s.admin();
    for i in 0..n {
        api.create_user(&format!("{prefix}{i}")).await;
    }
    let before = snapshot(&api).await;
    assert!(s.terminate().success());
    (s, before)
}

/// A directory sled wrote is never opened by fjall (nor the reverse); it
/// moves through an offline backup and a restore, and arrives identical.
#[tokio::test]
async fn a_sled_directory_moves_to_fjall_through_backup_and_restore() {
    let (s, before) = stopped_with_users("sled", "mover", 20).await;
    let data = s.data_dir().to_str().unwrap().to_string();

    // Opened with the default engine, the sled directory is refused with
    // the way out in the message, and left as it was.
    let refused = run_env(
        &["backup", "--offline", "--output", "/dev/null"],
        &[("COHORT_DATA_DIR", &data)],
    );
    assert!(!refused.status.success());
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(
        msg.contains("holds a sled store") && msg.contains("COHORT_STORAGE_ENGINE"),
        "{msg}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sled.backup");
    let out = run_env(
        &["backup", "--offline", "--output", file.to_str().unwrap()],
        &[
            ("COHORT_DATA_DIR", &data),
            ("COHORT_STORAGE_ENGINE", "sled"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = dir.path().join("fjall");
    let key = format!("{data}/secret.key");
    let out = run_env(
        &[
            "restore",
            "--input",
            file.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
            "--key-file",
            &key,
        ],
        &[("COHORT_STORAGE_ENGINE", "fjall")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(restored.join("fjall").is_dir(), "restored with fjall");

    let copy = Server::start_on(&restored, dir.path().join("fjall.log"));
    assert_eq!(snapshot(&copy.admin()).await, before);
    copy.admin().create_user("after-the-move").await;
}

/// `cohort migrate` moves a stopped fjall directory into PostgreSQL and
/// from there into sled; each copy is checked by the command itself and
/// serves exactly what the original did. A non-empty target is refused.
#[tokio::test]
async fn migrate_moves_a_directory_to_postgres_and_back() {
    let (s, before) = stopped_with_users("fjall", "migrant", 25).await;
    let data = s.data_dir().to_path_buf();
    let secret = std::fs::read_to_string(data.join("secret.key")).unwrap();
    let database = cohort_tests::postgres::fresh_database();

    let migrate = |from: &str, to: &str| {
        cohort_command(None)
            .args(["migrate", "--from", from, "--to", to])
            .output()
            .unwrap()
    };
    let out = migrate(&format!("fjall:{}", data.display()), &database);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["entries"].as_u64().unwrap() > 25, "{report}");

    // Into PostgreSQL again: the database is no longer empty.
    let again = migrate(&format!("fjall:{}", data.display()), &database);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // And back out, to sled this time, before any server touched it: the
    // same entries with the same checksum.
    let dir = tempfile::tempdir().unwrap();
    let back = dir.path().join("sled");
    let out = migrate(&database, &format!("sled:{}", back.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report_back: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report_back, report);

    // A server on the database, with the directory's secret key, serves
    // what the original did; and so does one on the sled copy.
    let host = dir.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("secret.key"), &secret).unwrap();
    let mut on_pg = Server::start_with(&[
        ("COHORT_STORAGE_URL", database.as_str()),
        ("COHORT_DATA_DIR", host.to_str().unwrap()),
    ]);
    assert_eq!(snapshot(&on_pg.admin()).await, before);
    assert!(on_pg.terminate().success());
    std::fs::write(back.join("secret.key"), &secret).unwrap();
    let on_sled = Server::start_with(&[
        ("COHORT_STORAGE_ENGINE", "sled"),
        ("COHORT_DATA_DIR", back.to_str().unwrap()),
    ]);
    assert_eq!(snapshot(&on_sled.admin()).await, before);
}

/// `text` with its trailer's entry checksum recomputed, as someone editing
/// the file would: the checksum is public, so only the HMAC can tell.
fn fix_checksum(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let lines: Vec<&str> = text.lines().collect();
    let mut hasher = Sha256::new();
    for l in &lines[1..lines.len() - 1] {
        hasher.update(l.as_bytes());
        hasher.update(b"\n");
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut trailer: Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
    trailer["end"]["sha256"] = json!(hex);
    let mut out: String = lines[..lines.len() - 1]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&trailer.to_string());
    out.push('\n');
    out
}

#[tokio::test]
async fn an_edited_backup_is_refused_and_an_untouched_one_restores() {
    let mut s = Server::start();
    let api = s.admin();
    api.create_user("kept").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    run(&[
        "backup",
        "--output",
        file.to_str().unwrap(),
        "--server",
        &s.base,
        "--api-key",
        ADMIN_KEY,
    ]);
    let text = std::fs::read_to_string(&file).unwrap();
    // The attacker's key, made on a server of their own, and its stored
    // entry copied in: one added line.
    let mut theirs = Server::start();
    let planted = theirs.admin().create_key("planted", "admin").await;
    theirs.kill();
    let other = dir.path().join("theirs.b");
    let out = cohort_command(Some(theirs.data_dir()))
        .args(["backup", "--offline", "--output", other.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mine: std::collections::HashSet<&str> = text.lines().collect();
    let theirs_text = std::fs::read_to_string(&other).unwrap();
    let added: Vec<&str> = theirs_text
        .lines()
        .filter(|l| l.starts_with("{\"ks\":\"api_keys") && !mine.contains(l))
        .collect();
    assert!(!added.is_empty(), "no key entry in {theirs_text}");
    let mut lines: Vec<&str> = text.lines().collect();
    let at = lines.len() - 1;
    for l in added.iter().rev() {
        lines.insert(at, l);
    }
    let entries = lines.len() - 2;
    let trailer = lines[at + added.len()].to_string();
    let mut trailer: Value = serde_json::from_str(&trailer).unwrap();
    trailer["end"]["entries"] = json!(entries);
    let trailer = trailer.to_string();
    let n = lines.len();
    lines[n - 1] = &trailer;
    let edited: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let edited = fix_checksum(&edited);
    let tampered = dir.path().join("tampered.b");
    std::fs::write(&tampered, edited).unwrap();

    let key = s.data_dir().join("secret.key");
    let restore = |input: &std::path::Path, target: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--input",
            input.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        command(&args)
            .env_remove("COHORT_SECRET_KEY")
            .output()
            .unwrap()
    };
    let target = dir.path().join("r");
    let key_arg = ["--key-file", key.to_str().unwrap()];
    for extra in [
        &key_arg[..],
        &[key_arg[0], key_arg[1], "--allow-unauthenticated"],
    ] {
        let out = restore(&tampered, &target, extra);
        assert!(!out.status.success());
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(msg.contains("not authentic"), "{msg}");
        assert!(!target.exists(), "a refused restore leaves nothing");
    }
    // Without a key, the restore says how to give one.
    let out = restore(&file, &target, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key-file"));
    // With another server's key, the real backup is refused too.
    let wrong = [
        "--key-file",
        theirs
            .data_dir()
            .join("secret.key")
            .to_str()
            .unwrap()
            .to_string()
            .leak(),
    ];
    let out = restore(&file, &target, &wrong);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not authentic"));
    // The untouched file restores, and the planted key is not there.
    let out = restore(&file, &target, &key_arg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.kill();
    let copy = Server::start_on(&target, dir.path().join("r.log"));
    copy.client(Some(&planted))
        .get("/api/v1/users")
        .await
        .expect(401);
    let users = copy.admin().get("/api/v1/users").await.expect(200).body;
    assert_eq!(users["items"][0]["username"], "kept", "{users}");
}
