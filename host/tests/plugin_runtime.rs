//! The plugin runtime against real components built by `plugins/build`:
//! the standard rule evaluator, and hostile guests that break every limit.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]
// A plugin call's limit is real time, which is what is measured.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohort::clock::SystemClock;
use cohort::config::PluginsConfig;
use cohort::outbound::{Outbound, Policy};
use cohort::plugins::bindings::rules::{EvaluateOptions, RuleSource};
use cohort::plugins::bindings::types::{AttributeDef, AttributeType, SubjectKind};
use cohort::plugins::{Limits, LoadedPlugin, Manifest, PluginError, Runtime};

fn artifact(name: &str) -> (Manifest, Vec<u8>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins");
    let wasm = std::fs::read(dir.join(format!("{name}.wasm")))
        .unwrap_or_else(|e| panic!("{name}.wasm missing ({e}); run plugins/build first"));
    let manifest =
        Manifest::from_toml(&std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap())
            .unwrap();
    (manifest, wasm)
}

fn runtime(cfg: PluginsConfig) -> Arc<Runtime> {
    Arc::new(Runtime::new(Limits::from_config(&cfg), None, Arc::new(SystemClock)).unwrap())
}

fn load(rt: &Runtime, name: &str) -> Arc<LoadedPlugin> {
    let (m, w) = artifact(name);
    Arc::new(rt.load(m, &w).unwrap())
}

fn schema() -> Vec<AttributeDef> {
    let def = |name: &str, ty| AttributeDef {
        name: name.into(),
        kind: SubjectKind::User,
        type_: ty,
        custom: false,
    };
    vec![
        def("department", AttributeType::Text),
        def("email", AttributeType::Text),
        def("level", AttributeType::Number),
        def("start_date", AttributeType::Timestamp),
    ]
}

fn batch(n: usize) -> cohort::plugins::bindings::rules::SubjectBatch {
    let mut b = cohort::plugins::batch::BatchBuilder::new(SubjectKind::User);
    for i in 0..n {
        b.push_text(
            "department",
            if i % 2 == 0 { "Engineering" } else { "Sales" },
        );
        b.push_number("level", i as f64);
        b.finish_subject();
    }
    b.build()
}

fn opts() -> EvaluateOptions {
    EvaluateOptions {
        now_millis: 1_800_000_000_000,
        explain: false,
    }
}

fn src(s: &str) -> RuleSource {
    RuleSource { text: s.into() }
}

#[test]
fn standard_evaluator_compiles_and_evaluates() {
    let rt = runtime(PluginsConfig::default());
    let p = load(&rt, "rules-standard");
    assert_eq!(p.description().language.as_deref(), Some("conditions-json"));
    let rules = [
        src(
            r#"{"conditions":[{"attribute":"department","operator":"equals","values":["Engineering"]}]}"#,
        ),
        src(r#"{"conditions":[{"attribute":"level","operator":"greater_than","values":[7]}]}"#),
    ];
    let session = rt
        .compile_rules(p.clone(), SubjectKind::User, &schema(), &rules)
        .unwrap()
        .unwrap();
    let e = session.evaluate(&batch(10), opts()).unwrap().unwrap();
    assert_eq!(e.words_per_rule, 1);
    assert_eq!(e.matches, vec![0b0101010101, 0b1100000000]);
    // The same compiled rules serve many batches.
    let e = session.evaluate(&batch(100), opts()).unwrap().unwrap();
    assert_eq!(e.words_per_rule, 2);
}

#[test]
fn compile_errors_point_at_the_condition() {
    let rt = runtime(PluginsConfig::default());
    let p = load(&rt, "rules-standard");
    let rules = [
        src(r#"{"conditions":[{"attribute":"department","operator":"equals","values":["x"]}]}"#),
        src(
            r#"{"conditions":[{"attribute":"department","operator":"equals","values":["x"]},{"attribute":"level","operator":"starts_with","values":["1"]}]}"#,
        ),
        src(r#"{"conditions":[{"attribute":"nope","operator":"equals","values":["x"]}]}"#),
    ];
    let Err(cohort::plugins::bindings::rules::CompileError::Invalid(problems)) = rt
        .compile_rules(p, SubjectKind::User, &schema(), &rules)
        .unwrap()
    else {
        panic!("expected compile problems")
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(
        (problems[0].rule, problems[0].at.as_str()),
        (1, "/conditions/1/operator")
    );
    assert!(
        problems[0].message.contains("number"),
        "{}",
        problems[0].message
    );
    assert_eq!(
        (problems[1].rule, problems[1].at.as_str()),
        (2, "/conditions/0/attribute")
    );
}

fn hostile(
    rt: &Arc<Runtime>,
    behaviour: &str,
) -> Result<cohort::plugins::bindings::rules::Evaluation, PluginError> {
    let p = load(rt, "hostile");
    let session = rt
        .compile_rules(p, SubjectKind::User, &schema(), &[src(behaviour)])
        .unwrap()
        .unwrap();
    session.evaluate(&batch(1000), opts()).map(|r| r.unwrap())
}

#[test]
fn an_infinite_loop_is_stopped_at_the_cpu_budget() {
    let rt = runtime(PluginsConfig::default());
    let started = Instant::now();
    let err = hostile(&rt, "loop").unwrap_err();
    assert!(
        matches!(err, PluginError::CpuLimit { limit_ms: 100, .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn fuel_metering_also_stops_a_loop() {
    let rt = runtime(PluginsConfig {
        fuel: Some(50_000_000),
        ..Default::default()
    });
    let err = hostile(&rt, "loop").unwrap_err();
    assert!(matches!(err, PluginError::CpuLimit { .. }), "{err:?}");
}

#[test]
fn a_memory_bomb_is_stopped_at_the_cap() {
    let rt = runtime(PluginsConfig {
        memory_mb: 16,
        ..Default::default()
    });
    let err = hostile(&rt, "alloc").unwrap_err();
    assert!(
        matches!(err, PluginError::MemoryLimit { limit_mb: 16, .. }),
        "{err:?}"
    );
}

#[test]
fn a_trap_mid_batch_fails_the_call_and_poisons_the_session() {
    let rt = runtime(PluginsConfig::default());
    let p = load(&rt, "hostile");
    let session = rt
        .compile_rules(
            p.clone(),
            SubjectKind::User,
            &schema(),
            &[src("trap-at:500")],
        )
        .unwrap()
        .unwrap();
    let err = session.evaluate(&batch(1000), opts()).unwrap_err();
    assert!(matches!(err, PluginError::Trap { .. }), "{err:?}");
    // A batch that ends before subject 500 would succeed on a fresh
    // session, but this instance is never entered again after a trap.
    assert!(matches!(
        session.evaluate(&batch(10), opts()),
        Err(PluginError::Trap { .. })
    ));
    let fresh = rt
        .compile_rules(
            p.clone(),
            SubjectKind::User,
            &schema(),
            &[src("trap-at:500")],
        )
        .unwrap()
        .unwrap();
    assert!(fresh.evaluate(&batch(10), opts()).unwrap().is_ok());
    // The refused call never reached the plugin, so only one failure counts.
    let health = p.health(5);
    assert_eq!(health.failures, 1);
}

#[test]
fn output_over_the_cap_is_refused() {
    let rt = runtime(PluginsConfig {
        output_kb: 1024,
        ..Default::default()
    });
    let err = hostile(&rt, "big-output").unwrap_err();
    assert!(
        matches!(err, PluginError::OutputTooLarge { limit: 1048576, .. }),
        "{err:?}"
    );
}

#[test]
fn input_over_the_cap_is_refused_before_the_call() {
    let rt = runtime(PluginsConfig {
        input_kb: 1,
        ..Default::default()
    });
    let p = load(&rt, "hostile");
    let session = rt
        .compile_rules(p.clone(), SubjectKind::User, &schema(), &[src("ok")])
        .unwrap()
        .unwrap();
    let calls = p.health(5).calls;
    let err = session.evaluate(&batch(1000), opts()).unwrap_err();
    assert!(
        matches!(err, PluginError::InputTooLarge { limit: 1024, .. }),
        "{err:?}"
    );
    assert_eq!(p.health(5).calls, calls, "the plugin was not called");
}

#[test]
fn hosts_outside_the_manifest_are_refused() {
    let rt = runtime(PluginsConfig::default());
    let e = hostile(&rt, "http:http://192.0.2.1/steal").unwrap();
    assert_eq!(e.errors.len(), 1);
    assert!(
        e.errors[0]
            .message
            .contains("HostNotAllowed(\"192.0.2.1\")"),
        "{}",
        e.errors[0].message
    );
}

#[test]
fn log_floods_are_capped_without_failing_the_call() {
    let rt = runtime(PluginsConfig {
        log_kb: 4,
        ..Default::default()
    });
    let e = hostile(&rt, "log-flood").unwrap();
    assert_eq!(e.matches.iter().map(|w| w.count_ones()).sum::<u32>(), 1000);
}

#[test]
fn repeated_failures_mark_the_plugin_unhealthy_and_success_recovers() {
    let rt = runtime(PluginsConfig {
        unhealthy_after: 3,
        ..Default::default()
    });
    let p = load(&rt, "hostile");
    for _ in 0..3 {
        let err = rt
            .compile_rules(
                p.clone(),
                SubjectKind::User,
                &schema(),
                &[src("trap-compile")],
            )
            .err();
        assert!(matches!(err, Some(PluginError::Trap { .. })), "{err:?}");
    }
    let report = p.health(3);
    assert_eq!(report.status, "unhealthy");
    assert_eq!(report.last_error.unwrap().code, "plugin_trap");
    let s = rt
        .compile_rules(p.clone(), SubjectKind::User, &schema(), &[src("ok")])
        .unwrap()
        .unwrap();
    s.evaluate(&batch(1), opts()).unwrap().unwrap();
    assert_eq!(p.health(3).status, "healthy");
}

#[test]
fn concurrent_calls_to_one_plugin_are_safe() {
    let rt = runtime(PluginsConfig::default());
    let p = load(&rt, "rules-standard");
    let rule = [src(
        r#"{"conditions":[{"attribute":"department","operator":"equals","values":["Sales"]}]}"#,
    )];
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..20 {
                    let session = rt
                        .compile_rules(p.clone(), SubjectKind::User, &schema(), &rule)
                        .unwrap()
                        .unwrap();
                    let e = session.evaluate(&batch(64), opts()).unwrap().unwrap();
                    assert_eq!(e.matches, vec![0xAAAA_AAAA_AAAA_AAAA]);
                }
            });
        }
    });
}

#[test]
fn a_core_module_or_wrong_world_is_refused_at_load() {
    let rt = runtime(PluginsConfig::default());
    let (mut manifest, wasm) = artifact("hostile");
    let err = rt.load(manifest.clone(), b"\0asm\x01\0\0\0").err().unwrap();
    assert!(
        err.to_string().contains("not a WebAssembly component"),
        "{err}"
    );
    manifest.world = cohort::plugins::World::DirectoryImporter;
    let err = rt.load(manifest, &wasm).err().unwrap();
    assert!(
        err.to_string()
            .contains("does not export cohort:plugin/importer"),
        "{err}"
    );
}

#[test]
fn python_component_instantiates_with_deny_by_default_wasi() {
    let rt = runtime(PluginsConfig::default());
    let p = load(&rt, "python-importer");
    use cohort::plugins::bindings::types::{ConfigEntry, ConfigValue};
    let config = [ConfigEntry {
        name: "people".into(),
        value: ConfigValue::TextList(vec!["7,ada@example.com,Engineering".into()]),
    }];
    let page = rt.importer_fetch_page(&p, &config, None).unwrap().unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].external_id, "7");
    let probe = [ConfigEntry {
        name: "probe".into(),
        value: ConfigValue::Boolean(true),
    }];
    let page = rt.importer_fetch_page(&p, &probe, None).unwrap().unwrap();
    for record in &page.records {
        let cohort::plugins::bindings::types::Value::Text(outcome) = &record.attributes[0].value
        else {
            panic!()
        };
        assert!(
            outcome.starts_with("denied"),
            "{}: {outcome}",
            record.external_id
        );
    }
    assert_eq!(page.records.len(), 4);
}

#[test]
fn allowed_hosts_are_reached_over_http_and_https() {
    // Loopback is internal, so the sandbox refuses it unless `[outbound]
    // allow_private` names it, whatever the manifest says.
    let loopback = Policy::new(vec!["127.0.0.0/8".parse().unwrap()]);
    let opted_in = Arc::new(
        Runtime::new(
            Limits::from_config(&PluginsConfig::default())
                .with_outbound(Arc::new(Outbound::new(loopback))),
            None,
            Arc::new(SystemClock),
        )
        .unwrap(),
    );
    for (rt, reached) in [(runtime(PluginsConfig::default()), false), (opted_in, true)] {
        let (mut manifest, wasm) = artifact("hostile");
        // Port 1 on loopback: nothing listens, so an allowed request gets as
        // far as connecting, which proves both schemes are supported.
        manifest.allowed_hosts = vec!["127.0.0.1:1".into()];
        let p = Arc::new(rt.load(manifest, &wasm).unwrap());
        for url in ["http://127.0.0.1:1/x", "https://127.0.0.1:1/x"] {
            let session = rt
                .compile_rules(
                    p.clone(),
                    SubjectKind::User,
                    &schema(),
                    &[src(&format!("http:{url}"))],
                )
                .unwrap()
                .unwrap();
            let e = session.evaluate(&batch(1), opts()).unwrap().unwrap();
            let message = &e.errors[0].message;
            if reached {
                // The cause ("refused") stays in the server log: a plugin
                // must not learn which internal ports are open.
                assert!(
                    message.contains("Connection(")
                        && message.contains("could not be reached")
                        && !message.contains("refused"),
                    "{url}: {message}"
                );
            } else {
                assert!(message.contains("HostNotAllowed"), "{url}: {message}");
            }
        }
    }
}
