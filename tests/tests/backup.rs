//! Online backup with `cohort backup`, restore with `cohort restore`, and a
//! round trip that gives an identical directory. Also: SIGTERM shuts down
//! cleanly and keeps every acknowledged write.

use std::process::Command;

use cohort_tests::{ADMIN_KEY, Api, Server, cohort_bin};
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

fn run(args: &[&str]) -> std::process::Output {
    let out = Command::new(cohort_bin())
        .args(args)
        .env_remove("COHORT_CONFIG")
        .output()
        .expect("run cohort");
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

    // The server kept serving; now restore into a fresh directory.
    let restored = dir.path().join("restored");
    run(&[
        "restore",
        "--input",
        file.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    // Restoring over a non-empty directory is refused.
    let again = Command::new(cohort_bin())
        .args([
            "restore",
            "--input",
            file.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
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
    let out = Command::new(cohort_bin())
        .args(["backup", "--offline", "--output", offline.to_str().unwrap()])
        .env("COHORT_DATA_DIR", s.data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .skip(1)
            .map(str::to_string)
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

/// A directory sled wrote is never opened by fjall (nor the reverse); it
/// moves through an offline backup and a restore, and arrives identical.
#[tokio::test]
async fn a_sled_directory_moves_to_fjall_through_backup_and_restore() {
    let mut s = Server::start_with(&[("COHORT_STORAGE_ENGINE", "sled")]);
    let api = s.admin();
    for i in 0..20 {
        api.create_user(&format!("mover{i}")).await;
    }
    let before = snapshot(&api).await;
    assert!(s.terminate().success());
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
    let out = run_env(
        &[
            "restore",
            "--input",
            file.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
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
