//! Group membership benchmark. Run after `plugins/build`:
//!
//!     cargo bench -p cohort --bench groups
//!
//! Builds the real application over a fresh data directory with the built
//! `rules-standard` evaluator, seeds a directory (100,000 users, 20,000
//! devices bound to users, 1,000 dynamic groups with a realistic mix of
//! rules), then measures through the domain API (no HTTP):
//!
//! - the first full recompute, which writes every membership with its audit
//!   event;
//! - a full recompute of an unchanged directory (what the nightly run does);
//! - attribute change → durable, updated memberships, per change (p50 / p99);
//! - previewing a new rule over the whole directory.
//!
//! Knobs: BENCH_USERS, BENCH_DEVICES, BENCH_GROUPS, BENCH_CHANGES,
//! BENCH_CACHE_MB (the storage cache; the shipped default when unset), and
//! BENCH_RULES=cel to write every group's rule as the equivalent CEL
//! expression instead of conditions.

#![allow(
    clippy::unwrap_used,
    reason = "benchmark code: a failure aborts the run, which is what it should do"
)]
// A benchmark measures real elapsed time, and drives a server that keeps real time.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use cohort::auth::Actor;
use cohort::clock::SystemClock;
use cohort::config::{Config, Secret};
use cohort::directory::{Binding, Device, OsFamily, SubjectKind, User, UserState};
use cohort::groups::{Group, GroupType, PreviewInput};
use cohort::server;
use serde_json::{Value, json};
use uuid::Uuid;

/// The same allocator as the `cohort` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdef";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const DEPTS: usize = 50;
const LOCATIONS: usize = 20;
const COST_CENTERS: usize = 100;
const DOMAINS: usize = 1_000;
const TITLES: [&str; 6] = [
    "Senior",
    "Staff",
    "Principal",
    "Junior",
    "Lead",
    "Associate",
];
const FAMILIES: [OsFamily; 5] = [
    OsFamily::Macos,
    OsFamily::Windows,
    OsFamily::Linux,
    OsFamily::Ios,
    OsFamily::Android,
];
const FAMILY_NAMES: [&str; 5] = ["macos", "windows", "linux", "ios", "android"];

fn user(i: usize, rng: &mut Lcg) -> User {
    let now = Utc::now();
    User {
        id: Uuid::now_v7(),
        username: format!("user{i}"),
        email: format!("user{i}@d{}.example", rng.below(DOMAINS)),
        state: if rng.below(20) == 0 {
            UserState::Suspended
        } else {
            UserState::Active
        },
        first_name: Some(format!("First{i}")),
        last_name: Some(format!("Last{i}")),
        display_name: None,
        department: Some(format!("Dept{}", rng.below(DEPTS))),
        job_title: Some(format!("{} Engineer", TITLES[rng.below(TITLES.len())])),
        location: Some(format!("City{}", rng.below(LOCATIONS))),
        employee_type: Some(["full-time", "part-time", "contractor"][rng.below(3)].into()),
        company: Some(format!("Co{}", rng.below(5))),
        cost_center: Some(format!("CC{}", rng.below(COST_CENTERS))),
        employee_id: Some(format!("E{i}")),
        manager_id: None,
        phone: None,
        description: None,
        custom_attributes: Default::default(),
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

fn device(i: usize, rng: &mut Lcg) -> Device {
    let now = Utc::now();
    let f = rng.below(FAMILIES.len());
    Device {
        id: Uuid::now_v7(),
        hostname: format!("host{i}"),
        display_name: None,
        os_family: FAMILIES[f],
        os_version: Some(format!("{}.{}", 10 + rng.below(5), rng.below(10))),
        architecture: Some(["arm64", "x86_64"][rng.below(2)].into()),
        serial_number: Some(format!("SN{i}")),
        agent_version: Some("1.0.0".into()),
        last_contact: Some(now - chrono::Duration::days(rng.below(90) as i64)),
        disk_encryption: Some(rng.below(10) != 0),
        mdm_enrolled: Some(rng.below(4) != 0),
        custom_attributes: Default::default(),
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

fn eq(a: &str, v: Value) -> Value {
    json!({"attribute": a, "operator": "equals", "values": v})
}

/// A realistic mix: most rules have an equality on a selective attribute,
/// about a tenth do not (prefix, suffix, dates), a tenth refer to another
/// group, and some device rules look at the device's users.
fn rule(i: usize, users: usize, user_groups: &[Uuid]) -> (String, Value) {
    let d = |k: usize| format!("Dept{}", k % DEPTS);
    let l = |k: usize| format!("City{}", k % LOCATIONS);
    if i < users {
        let r = match i % 8 {
            0 => json!({"conditions": [eq("department", json!([d(i)]))]}),
            1 => {
                json!({"conditions": [eq("department", json!([d(i)])), eq("location", json!([l(i / 8)]))]})
            }
            2 => json!({"conditions": [
                {"attribute": "department", "operator": "in", "values": [d(i), d(i + 7)]},
                eq("employee_type", json!(["full-time"]))]}),
            3 => json!({"conditions": [{"attribute": "cost_center", "operator": "equals",
                                        "values": [format!("cc{}", i % COST_CENTERS)], "ignore_case": true}]}),
            4 => json!({"conditions": [eq("department", json!([d(i)])),
                                       {"attribute": "job_title", "operator": "starts_with", "values": [TITLES[i % TITLES.len()]]}]}),
            5 => json!({"any": [
                {"conditions": [eq("location", json!([l(i)])), eq("department", json!([d(i)]))]},
                {"conditions": [eq("company", json!([format!("Co{}", i % 5)])), eq("department", json!([d(i + 3)]))]}]}),
            6 => {
                json!({"conditions": [{"member_of": user_groups[i - 6]}, eq("location", json!([l(i)]))]})
            }
            _ => json!({"conditions": [{"attribute": "email", "operator": "ends_with",
                                        "values": [format!("@d{}.example", i % DOMAINS)]}]}),
        };
        (format!("user group {i}"), r)
    } else {
        let f = |k: usize| FAMILY_NAMES[k % FAMILY_NAMES.len()];
        let r = match i % 5 {
            0 => json!({"conditions": [eq("os_family", json!([f(i)])),
                                       {"attribute": "os_version", "operator": "starts_with", "values": [format!("{}.", 10 + i % 5)]}]}),
            1 => json!({"conditions": [eq("os_family", json!([f(i)])),
                                       {"attribute": "last_contact", "operator": "less_than", "values": [format!("now-{}d", 30 + i % 30)]}]}),
            2 => json!({"conditions": [eq("disk_encryption", json!([false])),
                                       {"attribute": "os_family", "operator": "in", "values": [f(i), f(i + 1)]}]}),
            3 => json!({"conditions": [eq("os_family", json!([f(i)])),
                                       {"users": {"conditions": [eq("department", json!([d(i)]))]}}]}),
            _ => {
                json!({"conditions": [eq("mdm_enrolled", json!([true])), eq("os_family", json!([f(i)]))]})
            }
        };
        (format!("device group {i}"), r)
    }
}

/// The same rules as [`rule`], written as CEL expressions.
fn cel_rule(i: usize, users: usize, user_groups: &[Uuid]) -> (String, Value) {
    let d = |k: usize| format!("'Dept{}'", k % DEPTS);
    let l = |k: usize| format!("'City{}'", k % LOCATIONS);
    let source = if i < users {
        match i % 8 {
            0 => format!("user.department == {}", d(i)),
            1 => format!(
                "user.department == {} && user.location == {}",
                d(i),
                l(i / 8)
            ),
            2 => format!(
                "user.department in [{}, {}] && user.employee_type == 'full-time'",
                d(i),
                d(i + 7)
            ),
            3 => format!("user.cost_center.lowerAscii() == 'cc{}'", i % COST_CENTERS),
            4 => format!(
                "user.department == {} && user.job_title.startsWith('{}')",
                d(i),
                TITLES[i % TITLES.len()]
            ),
            5 => format!(
                "(user.location == {} && user.department == {}) || \
                 (user.company == 'Co{}' && user.department == {})",
                l(i),
                d(i),
                i % 5,
                d(i + 3)
            ),
            6 => format!(
                "in_group('{}') && user.location == {}",
                user_groups[i - 6],
                l(i)
            ),
            _ => format!("user.email.endsWith('@d{}.example')", i % DOMAINS),
        }
    } else {
        let f = |k: usize| format!("'{}'", FAMILY_NAMES[k % FAMILY_NAMES.len()]);
        match i % 5 {
            0 => format!(
                "device.os_family == {} && device.os_version.startsWith('{}.')",
                f(i),
                10 + i % 5
            ),
            1 => format!(
                "device.os_family == {} && device.last_contact < now - duration('{}h')",
                f(i),
                (30 + i % 30) * 24
            ),
            2 => format!(
                "device.disk_encryption == false && device.os_family in [{}, {}]",
                f(i),
                f(i + 1)
            ),
            3 => format!(
                "device.os_family == {} && device.users.exists(u, u.department == {})",
                f(i),
                d(i)
            ),
            _ => format!(
                "device.mdm_enrolled == true && device.os_family == {}",
                f(i)
            ),
        }
    };
    let name = if i < users {
        format!("user group {i}")
    } else {
        format!("device group {i}")
    };
    (name, json!({ "expression": source }))
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p) as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let n_users = env("BENCH_USERS", 100_000);
    let n_devices = env("BENCH_DEVICES", 20_000);
    let n_groups = env("BENCH_GROUPS", 1_000);
    let n_changes = env("BENCH_CHANGES", 1_000);
    let dir = std::env::temp_dir().join(format!("cohort-groups-bench-{}", Uuid::now_v7()));
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    assert!(
        plugins.join("rules-standard.wasm").exists(),
        "run plugins/build first"
    );
    let mut config = Config {
        data_dir: dir.clone(),
        bootstrap_admin_key: Some(Secret::new(ADMIN_KEY)),
        // COHORT_STORAGE_ENGINE (and the other environment overrides)
        // choose what is measured.
        ..Config::load(None, |k| std::env::var(k).ok()).expect("benchmark configuration")
    };
    config.plugins.directory = Some(plugins);
    config.plugins.cache_dir =
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-cache"));
    config.groups.full_recompute_hours = 0;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache_mb = env("BENCH_CACHE_MB", config.storage.cache_mb as usize) as u64;
    let mut options = config.storage.open_options();
    options.cache_bytes = cache_mb * 1024 * 1024;
    let store = server::open_store(&dir, &options).unwrap();
    let app = server::build(&config, store.clone(), Arc::new(SystemClock)).unwrap();
    let state = app.state;
    let actor = Actor::system("bench");

    // Seed users, devices and bindings directly: the fixture, not the
    // thing measured.
    let t = Instant::now();
    let mut rng = Lcg(42);
    let mut user_ids = Vec::with_capacity(n_users);
    for chunk in (0..n_users).collect::<Vec<_>>().chunks(5_000) {
        store
            .write(|txn| {
                for &i in chunk {
                    let u = user(i, &mut rng);
                    cohort::directory::fixtures::insert_user(txn, &u)?;
                    user_ids.push(u.id);
                }
                Ok::<_, cohort::error::DomainError>(())
            })
            .unwrap()
            .durable_blocking()
            .unwrap();
    }
    let mut device_ids = Vec::with_capacity(n_devices);
    for chunk in (0..n_devices).collect::<Vec<_>>().chunks(5_000) {
        store
            .write(|txn| {
                for &i in chunk {
                    let d = device(i, &mut rng);
                    let u = user_ids[rng.below(user_ids.len())];
                    let b = Binding {
                        user_id: u,
                        device_id: d.id,
                        created_at: d.created_at,
                    };
                    cohort::directory::fixtures::insert_device(txn, &d)?;
                    cohort::directory::fixtures::insert_binding(txn, &b)?;
                    device_ids.push(d.id);
                }
                Ok::<_, cohort::error::DomainError>(())
            })
            .unwrap()
            .durable_blocking()
            .unwrap();
    }
    println!(
        "seeded {n_users} users, {n_devices} devices in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Groups are stored directly too (saving each through the API would
    // evaluate it over the whole directory); the first full recompute then
    // computes everything at once, and any rule that does not compile shows
    // up as an evaluator error below.
    let user_share = n_groups * 4 / 5;
    let cel = std::env::var("BENCH_RULES").is_ok_and(|v| v == "cel");
    println!(
        "rules written as {}",
        if cel { "CEL expressions" } else { "conditions" }
    );
    let mut user_groups = Vec::new();
    let mut group_ids = Vec::new();
    store
        .write(|txn| {
            for i in 0..n_groups {
                let (name, r) = if cel {
                    cel_rule(i, user_share, &user_groups)
                } else {
                    rule(i, user_share, &user_groups)
                };
                let now = Utc::now();
                let subject = if i < user_share {
                    SubjectKind::User
                } else {
                    SubjectKind::Device
                };
                let g = Group {
                    id: Uuid::now_v7(),
                    name: name.clone(),
                    subject,
                    description: None,
                    group_type: GroupType::Dynamic,
                    rule: Some(r),
                    exclusion: None,
                    evaluator: "rules-standard".into(),
                    review: false,
                    member_states: if subject == SubjectKind::User {
                        vec![UserState::Active]
                    } else {
                        Vec::new()
                    },
                    built_in: false,
                    created_at: now,
                    updated_at: now,
                    version: 1,
                };
                cohort::groups::fixtures::insert_group(txn, &g)?;
                if subject == SubjectKind::User {
                    user_groups.push(g.id);
                }
                group_ids.push(g.id);
            }
            Ok::<_, cohort::error::DomainError>(())
        })
        .unwrap()
        .durable_blocking()
        .unwrap();

    rt.block_on(async {
        let principal = state.keys.authenticate(ADMIN_KEY, &cohort::auth::Origin::internal("bench")).unwrap().unwrap();
        let read = principal.read().unwrap();
        let t = Instant::now();
        let c = state.groups.recompute_all(&actor).await.unwrap();
        println!(
            "first full recompute (writes every membership + audit event): {:.0} ms, {} memberships added",
            ms(t.elapsed()),
            c.added
        );
        let failed: Vec<String> = group_ids
            .iter()
            .filter_map(|id| {
                let v = state.groups.get_group(&read, id).unwrap();
                v.status.evaluator_error.map(|e| format!("{}: {e}", v.group.name))
            })
            .collect();
        assert!(failed.is_empty(), "groups that did not compile: {failed:?}");
        for run in 1..=3 {
            let t = Instant::now();
            let c = state.groups.recompute_all(&actor).await.unwrap();
            println!(
                "full recompute of an unchanged directory, run {run}: {:.0} ms ({} changes)",
                ms(t.elapsed()),
                c.added + c.removed
            );
        }

        let cap = principal.manage_directory().unwrap();
        let mut rng = Lcg(7);
        let mut samples = Vec::with_capacity(n_changes);
        for _ in 0..n_changes {
            let id = user_ids[rng.below(user_ids.len())];
            let patch = json!({"department": format!("Dept{}", rng.below(DEPTS)),
                               "location": format!("City{}", rng.below(LOCATIONS))});
            let t = Instant::now();
            state
                .directory
                .update_user(&cap, &id, &patch, None)
                .await
                .unwrap();
            samples.push(t.elapsed());
        }
        if n_changes > 0 {
            println!(
                "attribute change -> durable memberships: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={n_changes})",
                ms(percentile(&mut samples, 0.5)),
                ms(percentile(&mut samples, 0.99)),
                ms(percentile(&mut samples, 1.0)),
            );
        }

        for (label, r) in [
            (
                "anchored (department + location)",
                json!({"conditions": [eq("department", json!(["Dept3"])),
                                      {"attribute": "location", "operator": "in", "values": ["City1", "City2"]}]}),
            ),
            (
                "unanchored (job_title contains)",
                json!({"conditions": [{"attribute": "job_title", "operator": "contains", "values": ["Staff"]}]}),
            ),
            (
                "cross-subject (has a Mac)",
                json!({"conditions": [{"devices": {"conditions": [eq("os_family", json!(["macos"]))]}}]}),
            ),
        ] {
            let mut samples = Vec::new();
            let mut count = 0;
            for _ in 0..5 {
                let t = Instant::now();
                let p = state
                    .groups
                    .preview(
                        &read,
                        PreviewInput {
                            subject: SubjectKind::User,
                            rule: r.clone(),
                            exclusion: None,
                            evaluator: None,
                            member_states: None,
                            group_id: None,
                            limit: None,
                        },
                    )
                    .await
                    .unwrap();
                samples.push(t.elapsed());
                count = p.members.count;
            }
            println!(
                "preview {label:<36} median {:.0} ms, max {:.0} ms ({count} members)",
                ms(percentile(&mut samples, 0.5)),
                ms(percentile(&mut samples, 1.0)),
            );
        }
    });
    drop(state);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    support::report_peak_rss(
        "groups benchmark process: seeding, first recompute, changes, previews",
    );
}
