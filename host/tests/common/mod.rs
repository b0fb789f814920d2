//! The in-process harness: the server `cohort serve` builds, started inside
//! the test process on a loopback port, with a clock the test moves.
//!
//! Tests that only need HTTP semantics (status codes, bodies, the audit log,
//! memberships) run here rather than against the binary: no process to
//! spawn, and time is the test's to move — an expiry is reached by
//! [`TestClock::advance`], not by sleeping. It is built as `server::serve`
//! builds it (`server::open_store`, `server::build`, `server::run` over a
//! real listener and the real connection layer), configured through the same
//! `COHORT_*` variables as the binary (read from a table, not the process
//! environment), so that a test moved from `tests/tests` keeps its setup and
//! its assertions, and talks to it with the same [`Api`] client.
//!
//! What it does not do, on purpose: the periodic housekeeping loops of
//! `serve` (sweeps, schedule ticks, the nightly recompute; the start-up
//! recompute is started as `serve` starts it). A test runs a
//! scheduled step itself, through [`InProcess::state`], after moving the
//! clock; so nothing happens behind its back and nothing needs polling.
//! Tests that need a process — crash, signals, the backup and restore
//! commands, sign-in against real providers, attacks on connections — stay
//! in `tests/tests`.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]
// Each test file uses the part of the harness it needs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use cohort::api::AppState;
use cohort::clock::TestClock;
use cohort::config::Config;
use cohort_tests::{ADMIN_KEY, Api, LOOPBACK_OPT_IN};

use cohort_tests::plugin_env;

/// A server running inside the test process; stopped when dropped.
pub struct InProcess {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The server's clock: it stands still until the test moves it.
    pub clock: Arc<TestClock>,
    /// The state the handlers share, for running scheduled steps.
    pub state: AppState,
    log: Log,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// A server on a fresh temporary data directory.
    pub fn start() -> InProcess {
        InProcess::start_with(&[])
    }

    /// A server that loads every built plugin (`target/test-plugins`),
    /// sharing the compiled-component cache with the binary's tests.
    pub fn start_with_plugins(env: &[(&str, &str)]) -> InProcess {
        let plugins = plugin_env();
        let mut all: Vec<(&str, &str)> = plugins.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(env);
        InProcess::start_with(&all)
    }

    /// A server configured by `env`, the `COHORT_*` variables the binary
    /// reads, on top of what every test server gets (a loopback port, a
    /// temporary data directory, the bootstrap admin key, loopback peers
    /// allowed).
    pub fn start_with(env: &[(&str, &str)]) -> InProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut vars: HashMap<String, String> = HashMap::from([
            ("COHORT_LISTEN".into(), "127.0.0.1:0".into()),
            (
                "COHORT_DATA_DIR".into(),
                dir.path().join("data").to_string_lossy().into_owned(),
            ),
            ("COHORT_BOOTSTRAP_ADMIN_KEY".into(), ADMIN_KEY.into()),
            ("COHORT_LOG_LEVEL".into(), "warn".into()),
            // As for the binary's tests: plugins come from the directory.
            ("COHORT_PLUGINS_BUILTIN".into(), "false".into()),
            (LOOPBACK_OPT_IN.0.into(), LOOPBACK_OPT_IN.1.into()),
        ]);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.extend(cohort_tests::storage_env_unless_chosen(
            &dir.path().join("data"),
            &env,
        ));
        vars.extend(env);
        let config = Config::load(None, |k| vars.get(k).cloned()).expect("configuration");
        let clock = TestClock::at_system_time();
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server_clock = Arc::clone(&clock);
        let log = Log::default();
        // The server's log goes to `log`, from every thread of its runtime
        // (a process-wide subscriber would mix the logs of parallel tests).
        let dispatch = tracing::Dispatch::new(cohort::server::log_subscriber(&config, log.clone()));
        // Its own runtime on its own thread, as in the binary: the server
        // does not share the test's (single-threaded) runtime, and blocking
        // work in a handler cannot stall the test's client.
        let thread = std::thread::spawn(move || {
            let on_start = dispatch.clone();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .on_thread_start(move || {
                    // For the thread's life, which the runtime ends.
                    std::mem::forget(tracing::dispatcher::set_default(&on_start));
                })
                .enable_all()
                .build()
                .expect("runtime");
            let _log = tracing::dispatcher::set_default(&dispatch);
            rt.block_on(serve(config, server_clock, ready, stopped));
        });
        let (base, state) = started
            .recv()
            .expect("the in-process server failed to start");
        InProcess {
            base,
            clock,
            state,
            log,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// A client with the bootstrap admin key.
    pub fn admin(&self) -> Api {
        self.client(Some(ADMIN_KEY))
    }

    /// A client with `key`, or with none.
    pub fn client(&self, key: Option<&str>) -> Api {
        Api::new(&self.base, key)
    }

    /// The server's log so far (at `COHORT_LOG_LEVEL`, `warn` unless the
    /// test says otherwise, as for the binary's tests).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.0.lock().unwrap()).into_owned()
    }

    /// Moves the server's clock on by `d`.
    pub fn advance(&self, d: chrono::Duration) {
        self.clock.advance(d);
    }
}

/// What `server::serve` does, minus the housekeeping loops: bind, build on
/// the test's clock, report the address and state, serve until told to stop.
async fn serve(
    mut config: Config,
    clock: Arc<TestClock>,
    ready: std::sync::mpsc::Sender<(String, AppState)>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let limits = cohort::serving::Limits::resolve(&config.http, None);
    let store = cohort::server::open_store(&config.data_dir, &config.storage.open_options())
        .expect("open store");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    if config.sign_in.public_url.is_none() {
        config.sign_in.public_url = Some(format!("http://{addr}"));
    }
    let build_config = config.clone();
    let app =
        tokio::task::spawn_blocking(move || cohort::server::build(&build_config, store, clock))
            .await
            .expect("build task")
            .expect("build");
    let state = app.state.clone();
    // As `serve` does: memberships may be stale after a restart.
    cohort::server::start_scheduled_recompute(&state.groups, "startup").await;
    ready
        .send((format!("http://{addr}"), state.clone()))
        .expect("the test is waiting");
    cohort::server::run(listener, app.state, limits, async {
        let _ = stop.await;
    })
    .await
    .expect("serve");
}

/// Where the server's log is written: a buffer the test reads.
#[derive(Clone, Default)]
struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Log {
    type Writer = Log;

    fn make_writer(&'w self) -> Log {
        self.clone()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Joined so that the store is closed before its directory goes.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
