//! The test server: the real `cohort` binary on a free loopback port with
//! a temporary data directory, and where its plugins are.

#![allow(
    clippy::unwrap_used,
    reason = "test harness: a panic fails the test that called it"
)]
// A process is observed from outside: waiting for it polls with real time.
#![allow(clippy::disallowed_methods)]

use super::*;

/// The admin key every test server is bootstrapped with.
pub const ADMIN_KEY: &str = "e2e-admin-key-0123456789abcdef";

/// Path of the `cohort` binary: `COHORT_BIN`, or the one next to the test
/// executable's target directory (`cargo build --bin cohort` puts it there).
pub fn cohort_bin() -> PathBuf {
    if let Ok(p) = std::env::var("COHORT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/cohort
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join("cohort");
    assert!(
        bin.exists(),
        "{} does not exist: build it first with `cargo build --bin cohort` (the README's test command does)",
        bin.display()
    );
    bin
}

/// A running server process and its data directory.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    data: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

/// The opt-in to loopback peers every server started here gets.
pub const LOOPBACK_OPT_IN: (&str, &str) = ("COHORT_OUTBOUND_ALLOW_PRIVATE", "127.0.0.0/8,::1");

/// `target/test-plugins`, where `plugins/build` puts the built-in plugins
/// and the test guests.
pub fn plugins_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins");
    assert!(
        dir.join("hostile.wasm").exists(),
        "{} has no built plugins: run plugins/build first (the README's test command does)",
        dir.display()
    );
    dir
}

/// The environment that makes a server load every built plugin, sharing
/// one compiled-component cache across tests.
pub fn plugin_env() -> Vec<(&'static str, String)> {
    let plugins = plugins_dir();
    let cache = plugins.join("../plugin-cache");
    vec![
        ("COHORT_PLUGINS_DIR", plugins.to_str().unwrap().to_string()),
        (
            "COHORT_PLUGIN_CACHE_DIR",
            cache.to_str().unwrap().to_string(),
        ),
    ]
}

impl Server {
    /// Starts a server on a fresh temporary data directory.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server on a fresh temporary data directory with extra
    /// environment variables.
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut s = Server::launch(&data, dir.path().join("server.log"), env);
        s._dir = Some(dir);
        s
    }

    /// Starts a server that loads every built plugin from `target/plugins`,
    /// sharing one compiled-component cache across tests.
    pub fn start_with_plugins(env: &[(&str, &str)]) -> Server {
        let plugins = plugin_env();
        let mut all: Vec<(&str, &str)> = plugins.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(env);
        Server::start_with(&all)
    }

    /// Starts a server on an existing data directory (after a kill, or a
    /// restore). The caller owns the directory.
    pub fn start_on(data: &Path, log: PathBuf) -> Server {
        Server::launch(data, log, Vec::new())
    }

    fn launch(data: &Path, log: PathBuf, env: Vec<(String, String)>) -> Server {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = Command::new(cohort_bin())
            .arg("serve")
            .env("COHORT_LISTEN", "127.0.0.1:0")
            .env("COHORT_DATA_DIR", data)
            .env("COHORT_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .env("COHORT_LOG_LEVEL", "warn")
            // The built-in plugins would be compiled by every test server;
            // tests that need plugins load them from the plugins directory
            // with a shared cache (`start_with_plugins`), and the test of
            // the built-ins turns them back on.
            .env("COHORT_PLUGINS_BUILTIN", "false")
            // Every peer a test starts (the OIDC provider, mock sources) is on
            // loopback, which the server refuses by default. A test that checks
            // the refusal passes `COHORT_OUTBOUND_ALLOW_PRIVATE=""`, which
            // overrides this.
            .env(LOOPBACK_OPT_IN.0, LOOPBACK_OPT_IN.1)
            .env_remove("COHORT_CONFIG")
            .envs(storage_env_unless_chosen(data, &env))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn cohort");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("cohort exited before listening; its log:\n{log}");
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child: Some(child),
            base,
            data: data.to_path_buf(),
            log,
            env,
            _dir: None,
        }
    }

    /// The server's process id while it runs (benchmarks read its memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server is running");
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        for _ in 0..200 {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        panic!("server did not exit within 10 s of SIGTERM");
    }

    /// Kills the server and starts it again on the same data directory.
    pub fn restart_after_kill(&mut self) {
        self.kill();
        let dir = self._dir.take();
        let mut fresh = Server::launch(&self.data, self.log.clone(), self.env.clone());
        fresh._dir = dir;
        *self = fresh;
    }

    /// Stops the server (SIGTERM, a clean exit) and starts it again on the
    /// same data directory, with `env` as its environment instead: to start
    /// it with or without its plugins, say.
    pub fn restart_with(&mut self, env: &[(&str, &str)]) {
        let status = self.terminate();
        assert!(status.success(), "the server exited with {status}");
        let dir = self._dir.take();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut fresh = Server::launch(&self.data, self.log.clone(), env);
        fresh._dir = dir;
        *self = fresh;
    }

    /// A client for this server with the bootstrap admin key.
    pub fn admin(&self) -> Api {
        self.client(Some(ADMIN_KEY))
    }

    /// A client with `key`, or with none.
    pub fn client(&self, key: Option<&str>) -> Api {
        Api::new(&self.base, key)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The storage environment for `data` (see [`crate::postgres::storage_env`]),
/// unless the test chose an engine itself.
pub fn storage_env_unless_chosen(data: &Path, env: &[(String, String)]) -> Vec<(String, String)> {
    if env.iter().any(|(k, _)| k.starts_with("COHORT_STORAGE_")) {
        return Vec::new();
    }
    crate::postgres::storage_env(data)
}

/// A `cohort` command (backup, restore, migrate…) for the data directory
/// `data` when given: with the storage the suite runs on, and without a
/// configuration file from the environment.
pub fn cohort_command(data: Option<&Path>) -> Command {
    let mut c = Command::new(cohort_bin());
    c.env_remove("COHORT_CONFIG");
    if let Some(data) = data {
        c.env("COHORT_DATA_DIR", data)
            .envs(crate::postgres::storage_env(data));
    }
    c
}
