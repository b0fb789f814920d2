//! A real PostgreSQL server for tests, started on a free loopback port in a
//! temporary directory with Debian's `initdb` and `pg_ctl`, once per test
//! process; every caller gets a database of its own on it.
//!
//! Why a watchdog shell rather than a `Drop`: statics are never dropped, and
//! a test process may be killed. The server is started by a `sh` whose
//! standard input is a pipe from this process; when the process ends, for
//! whatever reason, the pipe closes, `read` returns, and the shell stops the
//! server and removes its directory.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (as CI
//! does), the server runs as the `postgres` user that Debian's package
//! creates, through `runuser`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Which engine the test suite runs on: `COHORT_TEST_STORAGE=postgres` runs
/// every test that opens a store on PostgreSQL instead of the default.
pub fn postgres_selected() -> bool {
    std::env::var("COHORT_TEST_STORAGE").is_ok_and(|v| v == "postgres")
}

/// The environment that puts the store of data directory `data` on
/// PostgreSQL when the suite runs there (nothing otherwise): one database
/// per data directory, the same one again when a test restarts its server
/// on that directory or runs `cohort restore` into it.
pub fn storage_env(data: &Path) -> Vec<(String, String)> {
    // A directory that already holds an embedded store (restored into by a
    // test that chose its engine) stays on that store.
    if !postgres_selected() || data.join("fjall").exists() || data.join("db").exists() {
        return Vec::new();
    }
    static URLS: OnceLock<std::sync::Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    let mut urls = URLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let url = urls
        .entry(data.to_path_buf())
        .or_insert_with(fresh_database)
        .clone();
    vec![("COHORT_STORAGE_URL".into(), url)]
}

/// The shared test server.
pub struct TempPostgres {
    port: u16,
    /// Holds the watchdog's stdin open for the life of the process.
    _watchdog: std::sync::Mutex<Child>,
}

static SERVER: OnceLock<Result<TempPostgres, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The process's server, started on first use. Panics with the reason when
/// it cannot start, because a test that asked for PostgreSQL must not pass
/// without it.
pub fn server() -> &'static TempPostgres {
    match SERVER.get_or_init(TempPostgres::start) {
        Ok(s) => s,
        Err(e) => panic!("could not start the test PostgreSQL server: {e}"),
    }
}

/// A URL to a new, empty database on the process's server.
pub fn fresh_database() -> String {
    server().database()
}

impl TempPostgres {
    fn start() -> Result<TempPostgres, String> {
        let bin = bindir()?;
        let mut last = String::new();
        // A port found free can be taken before the server binds it.
        for _ in 0..3 {
            match TempPostgres::start_once(&bin) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn start_once(bin: &Path) -> Result<TempPostgres, String> {
        let port = free_port()?;
        let root = std::env::temp_dir().join(format!(
            "cohort-pg-{}-{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let as_root = is_root();
        if as_root {
            run(Command::new("chown").args(["postgres:postgres", &path(&root)]))?;
        }
        let data = root.join("data");
        let initdb = bin.join("initdb");
        let mut cmd = as_user(as_root, &initdb);
        cmd.args([
            "-D",
            &path(&data),
            "-U",
            "cohort",
            "--auth=trust",
            "-E",
            "UTF8",
        ])
        .args(["--no-instructions", "--locale=C"]);
        run(&mut cmd)?;
        // Loopback only, no Unix socket outside the directory, durability
        // as in production (fsync on), room for many stores' connections.
        let options = format!(
            "-p {port} -h 127.0.0.1 -k {} -c max_connections=400 -c fsync=on",
            path(&root)
        );
        let script = r#"
            "$PG_CTL" -D "$DATA" -l "$ROOT/log" -o "$OPTIONS" -w -t 60 start >/dev/null || { cat "$ROOT/log"; exit 1; }
            echo ready
            read _ignored
            "$PG_CTL" -D "$DATA" -m immediate stop >/dev/null 2>&1
            rm -rf "$ROOT"
        "#;
        let mut watchdog = as_user(as_root, Path::new("sh"));
        watchdog
            .args(["-c", script])
            .env("PG_CTL", bin.join("pg_ctl"))
            .env("DATA", &data)
            .env("ROOT", &root)
            .env("OPTIONS", options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = watchdog.spawn().map_err(|e| format!("sh: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut said = String::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line == "ready" => break,
                Some(Ok(line)) => {
                    said.push_str(&line);
                    said.push('\n');
                }
                _ => {
                    let _ = child.wait();
                    return Err(format!("pg_ctl start failed on port {port}:\n{said}"));
                }
            }
        }
        Ok(TempPostgres {
            port,
            _watchdog: std::sync::Mutex::new(child),
        })
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://cohort@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        let admin = self.url("postgres");
        let sql = format!("CREATE DATABASE {name}");
        // The blocking client must not run on an async test's thread.
        let created = std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
            client.batch_execute(&sql)
        })
        .join();
        match created {
            Ok(Ok(())) => self.url(&name),
            Ok(Err(e)) => panic!("CREATE DATABASE on the test server: {e}"),
            Err(_) => panic!("CREATE DATABASE on the test server panicked"),
        }
    }
}

fn bindir() -> Result<PathBuf, String> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    // Debian keeps the server binaries out of PATH, one folder per version.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("PostgreSQL is not installed (/usr/lib/postgresql: {e})"))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".into())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn as_user(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
