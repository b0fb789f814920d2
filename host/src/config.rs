//! Server configuration: a TOML file, then environment overrides, then
//! defaults. Unknown keys are errors, because a typo in a config file should
//! not silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Environment variables that override the file. Their names are a stable
/// interface for scripts and ops tooling.
pub const ENV_LISTEN: &str = "COHORT_LISTEN";
/// See [`ENV_LISTEN`].
pub const ENV_DATA_DIR: &str = "COHORT_DATA_DIR";
/// See [`ENV_LISTEN`].
pub const ENV_BOOTSTRAP_ADMIN_KEY: &str = "COHORT_BOOTSTRAP_ADMIN_KEY";
/// See [`ENV_LISTEN`].
pub const ENV_LOG_FORMAT: &str = "COHORT_LOG_FORMAT";
/// See [`ENV_LISTEN`].
pub const ENV_LOG_LEVEL: &str = "COHORT_LOG_LEVEL";
/// See [`ENV_LISTEN`].
pub const ENV_PLUGINS_DIR: &str = "COHORT_PLUGINS_DIR";
/// See [`ENV_LISTEN`].
pub const ENV_PLUGIN_CACHE_DIR: &str = "COHORT_PLUGIN_CACHE_DIR";
/// Overrides `plugins.builtin` (`true` / `false`).
pub const ENV_PLUGINS_BUILTIN: &str = "COHORT_PLUGINS_BUILTIN";
/// See [`ENV_LISTEN`]. Base64 of 32 bytes; overrides the key file in the data directory.
pub const ENV_SECRET_KEY: &str = "COHORT_SECRET_KEY";
/// Overrides `scim.hard_delete` (`true` / `false`).
pub const ENV_SCIM_HARD_DELETE: &str = "COHORT_SCIM_HARD_DELETE";
/// Overrides `schedules.tick_ms`.
pub const ENV_SCHEDULE_TICK_MS: &str = "COHORT_SCHEDULE_TICK_MS";
/// Overrides `scim.accept_passwords` (`true` / `false`).
pub const ENV_SCIM_ACCEPT_PASSWORDS: &str = "COHORT_SCIM_ACCEPT_PASSWORDS";
/// Overrides `sign_in.public_url`.
pub const ENV_PUBLIC_URL: &str = "COHORT_PUBLIC_URL";
/// Overrides `storage.engine` (`fjall`, `sled` or `postgres`).
pub const ENV_STORAGE_ENGINE: &str = "COHORT_STORAGE_ENGINE";
/// Overrides `storage.url`: a `postgres://` URL, which selects PostgreSQL.
pub const ENV_STORAGE_URL: &str = "COHORT_STORAGE_URL";
/// Overrides `http.trusted_proxies`: CIDR blocks or addresses, separated by
/// commas (empty: trust none).
pub const ENV_TRUSTED_PROXIES: &str = "COHORT_TRUSTED_PROXIES";
/// Overrides `outbound.allow_private`: CIDR blocks, addresses or host names,
/// separated by commas (empty: allow none).
pub const ENV_OUTBOUND_ALLOW_PRIVATE: &str = "COHORT_OUTBOUND_ALLOW_PRIVATE";
/// Overrides `http.header_timeout_ms`.
pub const ENV_HTTP_HEADER_TIMEOUT_MS: &str = "COHORT_HTTP_HEADER_TIMEOUT_MS";
/// Overrides `http.body_timeout_ms`.
pub const ENV_HTTP_BODY_TIMEOUT_MS: &str = "COHORT_HTTP_BODY_TIMEOUT_MS";
/// Overrides `http.idle_timeout_ms`.
pub const ENV_HTTP_IDLE_TIMEOUT_MS: &str = "COHORT_HTTP_IDLE_TIMEOUT_MS";
/// Overrides `http.max_connections`.
pub const ENV_HTTP_MAX_CONNECTIONS: &str = "COHORT_HTTP_MAX_CONNECTIONS";
/// Overrides `storage.connections`.
pub const ENV_STORAGE_CONNECTIONS: &str = "COHORT_STORAGE_CONNECTIONS";
/// Overrides `http.worker_threads`.
pub const ENV_HTTP_WORKER_THREADS: &str = "COHORT_HTTP_WORKER_THREADS";
/// Overrides `http.max_connections_per_peer`.
pub const ENV_HTTP_MAX_CONNECTIONS_PER_PEER: &str = "COHORT_HTTP_MAX_CONNECTIONS_PER_PEER";
/// Overrides `http.shutdown_timeout_ms`.
pub const ENV_HTTP_SHUTDOWN_TIMEOUT_MS: &str = "COHORT_HTTP_SHUTDOWN_TIMEOUT_MS";

/// Everything `cohort serve` can be told.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Where the embedded store keeps its files. Unset, it does not depend
    /// on the directory Cohort was started from: see [`default_data_dir`].
    pub data_dir: PathBuf,
    /// The first admin's API key. Used once, when the store has no key yet;
    /// when unset, a key is generated and printed once instead.
    pub bootstrap_admin_key: Option<Secret>,
    /// Logging.
    pub log: LogConfig,
    /// HTTP limits.
    pub http: HttpConfig,
    /// Storage engine tuning.
    pub storage: StorageConfig,
    /// The plugin runtime.
    pub plugins: PluginsConfig,
    /// Group membership computation.
    pub groups: GroupsConfig,
    /// How often scheduled work is looked for.
    pub schedules: SchedulesConfig,
    /// Sign-in and sessions.
    pub sign_in: SignInConfig,
    /// The SCIM server.
    pub scim: ScimConfig,
    /// Where the server and its plugins may send HTTP requests.
    pub outbound: OutboundConfig,
    /// The key that encrypts plugin secrets at rest. When unset, a key is
    /// generated once into `<data_dir>/secret.key` (mode 0600). Keep it with
    /// backups: without it, stored secrets cannot be read back.
    pub secret_key: Option<Secret>,
}

/// Outbound HTTP (identity provider discovery, keys and tokens; plugins'
/// requests). Internal addresses (loopback, private, link-local, unique-local,
/// CGNAT, multicast, the cloud metadata services) are refused after names are
/// resolved, so that whoever configures a provider or a plugin instance cannot
/// reach into the server's own network.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Exceptions: CIDR blocks (`10.1.0.0/16`), addresses (`127.0.0.1`) or
    /// host names (`idp.internal.example`, any address it resolves to). Empty
    /// by default.
    pub allow_private: Vec<AllowPrivate>,
}

/// One `outbound.allow_private` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AllowPrivate(pub crate::outbound::Allowed);

impl TryFrom<String> for AllowPrivate {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse().map(AllowPrivate)
    }
}

impl OutboundConfig {
    /// The policy the outbound clients enforce.
    pub fn policy(&self) -> crate::outbound::Policy {
        crate::outbound::Policy::new(self.allow_private.iter().map(|a| a.0.clone()).collect())
    }
}

/// Plugin loading and the limits every plugin call runs under.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// A directory of `<name>.wasm` + `<name>.toml` pairs loaded at start-up.
    /// A plugin there replaces the built-in one of the same name.
    pub directory: Option<PathBuf>,
    /// Load the plugins built into the binary (the rule evaluator, the
    /// importers and the identity providers). Off only for a server that
    /// must run nothing but what its plugins directory holds.
    pub builtin: bool,
    /// Where compiled components are cached, keyed by content hash, so a
    /// restart does not recompile. Default: `<data_dir>/cache/components`.
    pub cache_dir: Option<PathBuf>,
    /// CPU budget of one call, in milliseconds. Time spent waiting for
    /// outbound HTTP does not count.
    pub cpu_ms: u64,
    /// Wall-clock budget of one call, including outbound HTTP, in milliseconds.
    pub wall_ms: u64,
    /// Meter CPU with fuel (deterministic instruction counting) instead of
    /// time; the value is the fuel per call. Slower, but reproducible.
    pub fuel: Option<u64>,
    /// Linear memory per plugin instance, in MiB.
    pub memory_mb: u64,
    /// Largest input one call may receive, in KiB.
    pub input_kb: u64,
    /// Largest output one call may return, in KiB.
    pub output_kb: u64,
    /// Bytes one call may log, in KiB; later lines are dropped and counted.
    pub log_kb: u64,
    /// Longest outbound HTTP request, in milliseconds.
    pub http_timeout_ms: u64,
    /// Largest outbound HTTP response body, in KiB.
    pub http_response_kb: u64,
    /// Consecutive failed calls after which a plugin is reported unhealthy.
    pub unhealthy_after: u32,
    /// Instances the pooling allocator keeps slots for; also the most
    /// plugin calls in flight at once.
    pub max_instances: u32,
    /// Largest plugin upload, in MiB.
    pub max_upload_mb: u64,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            directory: None,
            builtin: true,
            cache_dir: None,
            cpu_ms: 100,
            wall_ms: 30_000,
            fuel: None,
            memory_mb: 64,
            input_kb: 16 * 1024,
            output_kb: 4 * 1024,
            log_kb: 64,
            http_timeout_ms: 10_000,
            http_response_kb: 8 * 1024,
            unhealthy_after: 5,
            max_instances: 128,
            max_upload_mb: 64,
        }
    }
}

/// How logs are written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `cohort=debug,tower_http=info`.
    pub level: String,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Limits on HTTP requests, and who stands between Cohort and its clients.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Reverse proxies (CIDR blocks, or single addresses) whose
    /// `X-Forwarded-For` names the client. Empty by default: the connection's
    /// peer is the client, and the header is ignored, since anyone can send
    /// it. Behind a proxy, list it here, or every client has the proxy's
    /// address in the audit log and shares its sign-in rate limit.
    pub trusted_proxies: Vec<ProxyNet>,
    /// How long a client may take to send a request's headers, from the
    /// moment the server starts reading them. Real clients send them in one
    /// packet; 10 s allows a slow mobile link, and a slowloris client holds
    /// a connection no longer.
    pub header_timeout_ms: u64,
    /// How long a client may take to send a request's whole body, from the
    /// end of its headers. A 1 MiB body (the default `max_body_bytes`) at
    /// 300 kbit/s takes under 30 s.
    pub body_timeout_ms: u64,
    /// How long a connection may sit with no request in progress before the
    /// server closes it. Longer than the idle timeouts of common proxies and
    /// clients (nginx 60 s upstream keep-alive, reqwest 90 s pool idle), so
    /// they close first and never race a request against the close.
    pub idle_timeout_ms: u64,
    /// Most connections open at once; 0 derives it from the process's open
    /// file limit (half of it, at most 10,000), which the server raises to
    /// its hard limit at start-up. At the cap, the connection that has waited
    /// longest on its client (idle, or still sending its headers or body) is
    /// closed to admit the new one.
    pub max_connections: usize,
    /// Most connections open at once from one peer address; 0 (the default)
    /// is a quarter of `max_connections`, so one address cannot fill the
    /// server but one NAT of many people still fits; at or above
    /// `max_connections` it is off. The peer is the socket's: behind a
    /// reverse proxy every connection comes from the proxy, so peers listed
    /// in `trusted_proxies` are exempt (the proxy is expected to limit its
    /// clients).
    pub max_connections_per_peer: usize,
    /// How long a graceful shutdown waits for the requests in progress
    /// before closing their connections. 25 s: under Kubernetes' default
    /// 30 s termination grace (and systemd's 90 s stop timeout), so the
    /// server exits by itself, storage flushed, rather than being killed,
    /// however slowly a client sends a body.
    pub shutdown_timeout_ms: u64,
    /// Threads that run requests; 0 (the default) derives it from the
    /// engine. On the embedded engines a storage read is a memory read, and
    /// one thread per core is best. On PostgreSQL each read waits on a round
    /// trip, during which its thread does nothing else, so 8 per core (at
    /// least 16) keep the cores busy while reads are out.
    pub worker_threads: usize,
}

impl HttpConfig {
    /// The request threads to start: `worker_threads`, or the default for
    /// `engine` on a machine with `cores` cores.
    pub fn worker_threads_for(&self, engine: cohort_storage::Engine, cores: usize) -> usize {
        match (self.worker_threads, engine) {
            (0, cohort_storage::Engine::Postgres) => (cores * 8).max(16),
            (0, _) => cores.max(1),
            (n, _) => n,
        }
    }
}

/// One entry of `trusted_proxies`: a CIDR block such as `10.0.0.0/8`, or a
/// single address (a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ProxyNet(pub ipnet::IpNet);

impl std::str::FromStr for ProxyNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(|n| ProxyNet(n.trunc()))
            .map_err(|_| format!("{s:?} is not a CIDR block (10.0.0.0/8) or an IP address"))
    }
}

impl TryFrom<String> for ProxyNet {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Group membership computation.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// Hours between full recomputes of every dynamic group (one also runs at
    /// start-up). 24 by default; 0 runs only the one at start-up.
    pub full_recompute_hours: u64,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            full_recompute_hours: 24,
        }
    }
}

/// Scheduled work (import schedules).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulesConfig {
    /// Milliseconds between looks for due import schedules and lapsed
    /// exemptions: how late a schedule may start or an exemption end. 5,000
    /// by default; a look costs a scan of the (few) schedules, and of the
    /// exemptions only once one has lapsed.
    pub tick_ms: u64,
}

impl Default for SchedulesConfig {
    fn default() -> Self {
        SchedulesConfig { tick_ms: 5_000 }
    }
}

/// The SCIM server at `/scim/v2`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScimConfig {
    /// `DELETE /scim/v2/Users/{id}` removes the user. Off by default: it
    /// suspends them, as JumpCloud treats Okta deprovisioning, so a
    /// mistake upstream loses nothing.
    pub hard_delete: bool,
    /// Accept `password` in SCIM bodies and set it as the user's local
    /// password (argon2id). Off by default: such passwords are refused.
    pub accept_passwords: bool,
}

/// Sign-in pages and sessions.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignInConfig {
    /// Cohort's address as users' browsers reach it (behind a proxy, the
    /// proxy's). Identity providers redirect back to
    /// `<public_url>/sign-in/callback`, so register that there. Defaults to
    /// `http://<listen address>`. With `https://`, cookies are `Secure`.
    pub public_url: Option<String>,
    /// Absolute URLs a sign-in may continue to (`return_to`), besides
    /// Cohort's own pages. Exact matches only: anything else is refused,
    /// so sign-in cannot be used as an open redirect.
    pub allowed_redirects: Vec<String>,
    /// Hours a session lasts.
    pub session_hours: u64,
    /// Minutes a session JWT is valid (at most as long as its session).
    pub token_minutes: u64,
    /// How fast sign-ins may be started.
    pub rate_limit: SignInRateLimit,
}

impl Default for SignInConfig {
    fn default() -> Self {
        SignInConfig {
            public_url: None,
            allowed_redirects: Vec::new(),
            session_hours: 12,
            token_minutes: 60,
            rate_limit: SignInRateLimit::default(),
        }
    }
}

/// Rate limits on starting a sign-in (`POST /sign-in`, the password form,
/// the provider's callback). Each allows that many at once, then refills
/// steadily over a minute; 0 turns a limit off. Over a limit, the answer is
/// `429` with `Retry-After`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignInRateLimit {
    /// Per client address (per /64 for IPv6). An office behind one NAT
    /// shares it, so it is generous.
    pub per_address_per_minute: u32,
    /// Per identifier typed (username or email, case-insensitively): guesses
    /// at one account from many addresses.
    pub per_identifier_per_minute: u32,
    /// Most addresses, and most identifiers, remembered at once. Memory stays
    /// bounded under a flood of distinct ones: when full, the entries that
    /// are closest to being allowed again are forgotten first.
    pub max_tracked: usize,
}

impl Default for SignInRateLimit {
    fn default() -> Self {
        SignInRateLimit {
            per_address_per_minute: 60,
            per_identifier_per_minute: 20,
            max_tracked: 100_000,
        }
    }
}

/// Storage engine tuning.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Page cache size in MiB. The default, 1 GiB, holds the hot part of a
    /// directory of about 100,000 users with their memberships and audit
    /// trail; with 256 MiB, writes there wait on pages read back from disk
    /// often enough to double the slowest percent of changes (see
    /// docs/PERFORMANCE.md).
    pub cache_mb: u64,
    /// The embedded engine. fjall is the default because it meets the
    /// durability (fdatasync), memory and disk goals sled 0.34 misses; sled
    /// stays for data directories it wrote. A directory is opened only by
    /// the engine that wrote it; `cohort migrate` moves it between them.
    pub engine: cohort_storage::Engine,
    /// The PostgreSQL database, for several hosts sharing one directory:
    /// `postgres://user:password@host:5432/cohort`. Setting it selects the
    /// `postgres` engine. A secret, because the URL may carry a password.
    pub url: Option<Secret>,
    /// Connections each host opens to PostgreSQL for reads (writes use one
    /// more). The default suits a 2-core host; the database's
    /// `max_connections` must cover every host's.
    pub connections: usize,
}

impl StorageConfig {
    /// What the storage crate needs to open the data directory.
    pub fn open_options(&self) -> cohort_storage::OpenOptions {
        cohort_storage::OpenOptions {
            cache_bytes: self.cache_mb * 1024 * 1024,
            engine: self.engine,
            url: self.url.as_ref().map(|u| u.expose().to_string()),
            connections: self.connections,
        }
    }
}

/// Where the data lives when the configuration does not say: the same place
/// wherever `cohort` is started from, so that a service started from `/`
/// and an admin's shell in their home directory open the same store.
/// - `$STATE_DIRECTORY`, which systemd sets for a unit with `StateDirectory=`
///   (the packaged unit uses `/var/lib/cohort`);
/// - otherwise `$XDG_DATA_HOME/cohort`, then `$HOME/.local/share/cohort`
///   (the XDG base directory specification's defaults).
///
/// `None` when none of them is set (a bare container): the caller must then
/// name a directory rather than have one picked relative to wherever it is.
pub fn default_data_dir(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(state) = set("STATE_DIRECTORY") {
        // systemd may list several, separated by ':'; Cohort asks for one.
        let first = state.to_string_lossy().split(':').next().map(PathBuf::from);
        return first;
    }
    // The specification ignores a relative XDG_DATA_HOME, and so does Cohort.
    if let Some(xdg) = set("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Some(xdg.join("cohort"));
    }
    set("HOME")
        .filter(|p| p.is_absolute())
        .map(|h| h.join(".local/share/cohort"))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            // Empty means "not set": `load` resolves it from the environment.
            data_dir: PathBuf::new(),
            bootstrap_admin_key: None,
            log: LogConfig::default(),
            http: HttpConfig::default(),
            storage: StorageConfig::default(),
            plugins: PluginsConfig::default(),
            groups: GroupsConfig::default(),
            schedules: SchedulesConfig::default(),
            sign_in: SignInConfig::default(),
            scim: ScimConfig::default(),
            outbound: OutboundConfig::default(),
            secret_key: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 1024 * 1024,
            trusted_proxies: Vec::new(),
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connections: 0,
            max_connections_per_peer: 0,
            shutdown_timeout_ms: 25_000,
            worker_threads: 0,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_mb: 1024,
            engine: cohort_storage::Engine::default(),
            url: None,
            connections: 8,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An environment override has a value that does not parse.
    #[error("invalid value for {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A setting parses but cannot be used.
    #[error("invalid value for {key}: {message}")]
    Invalid {
        /// The setting, as a dotted key.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl Config {
    /// Loads `path` when given (defaults otherwise), then applies overrides
    /// from `env` (a lookup, so tests need not touch the process environment).
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        if let Some(v) = env(ENV_LISTEN) {
            config.listen = v.parse().map_err(|e| ConfigError::Env {
                var: ENV_LISTEN,
                message: format!("{e} (expected host:port, e.g. 127.0.0.1:8080)"),
            })?;
        }
        if let Some(v) = env(ENV_DATA_DIR) {
            config.data_dir = PathBuf::from(v);
        }
        if config.data_dir.as_os_str().is_empty() {
            config.data_dir = default_data_dir(&env).ok_or_else(|| ConfigError::Env {
                var: ENV_DATA_DIR,
                message: "no data directory: set COHORT_DATA_DIR (or data_dir in the \
                          configuration file); HOME, XDG_DATA_HOME and STATE_DIRECTORY \
                          are all unset"
                    .into(),
            })?;
        }
        if let Some(v) = env(ENV_BOOTSTRAP_ADMIN_KEY) {
            config.bootstrap_admin_key = Some(Secret(v));
        }
        if let Some(v) = env(ENV_LOG_FORMAT) {
            config.log.format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::Env {
                        var: ENV_LOG_FORMAT,
                        message: format!("{v:?} is not one of text, json"),
                    });
                }
            };
        }
        if let Some(v) = env(ENV_LOG_LEVEL) {
            config.log.level = v;
        }
        if let Some(v) = env(ENV_PLUGINS_DIR) {
            config.plugins.directory = Some(PathBuf::from(v));
        }
        if let Some(v) = env(ENV_PLUGIN_CACHE_DIR) {
            config.plugins.cache_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = env(ENV_PLUGINS_BUILTIN) {
            config.plugins.builtin = v.parse().map_err(|_| ConfigError::Env {
                var: ENV_PLUGINS_BUILTIN,
                message: format!("{v:?} is not true or false"),
            })?;
        }
        if let Some(v) = env(ENV_SECRET_KEY) {
            config.secret_key = Some(Secret(v));
        }
        if let Some(v) = env(ENV_PUBLIC_URL) {
            config.sign_in.public_url = Some(v);
        }
        if let Some(v) = env(ENV_STORAGE_ENGINE) {
            config.storage.engine = v.parse().map_err(|message| ConfigError::Env {
                var: ENV_STORAGE_ENGINE,
                message,
            })?;
        }
        if let Some(v) = env(ENV_TRUSTED_PROXIES) {
            config.http.trusted_proxies = v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|message| ConfigError::Env {
                    var: ENV_TRUSTED_PROXIES,
                    message,
                })?;
        }
        for (var, slot) in [
            (
                ENV_HTTP_HEADER_TIMEOUT_MS,
                &mut config.http.header_timeout_ms,
            ),
            (ENV_HTTP_BODY_TIMEOUT_MS, &mut config.http.body_timeout_ms),
            (ENV_HTTP_IDLE_TIMEOUT_MS, &mut config.http.idle_timeout_ms),
            (
                ENV_HTTP_SHUTDOWN_TIMEOUT_MS,
                &mut config.http.shutdown_timeout_ms,
            ),
        ] {
            if let Some(v) = env(var) {
                *slot = v.parse().map_err(|_| ConfigError::Env {
                    var,
                    message: format!("{v:?} is not a number of milliseconds"),
                })?;
            }
        }
        if let Some(v) = env(ENV_HTTP_MAX_CONNECTIONS) {
            config.http.max_connections = v.parse().map_err(|_| ConfigError::Env {
                var: ENV_HTTP_MAX_CONNECTIONS,
                message: format!("{v:?} is not a number (0: derived from the open file limit)"),
            })?;
        }
        if let Some(v) = env(ENV_HTTP_WORKER_THREADS) {
            config.http.worker_threads = v.parse().map_err(|_| ConfigError::Env {
                var: ENV_HTTP_WORKER_THREADS,
                message: format!("{v:?} is not a number (0: derived from the engine)"),
            })?;
        }
        if let Some(v) = env(ENV_HTTP_MAX_CONNECTIONS_PER_PEER) {
            config.http.max_connections_per_peer = v.parse().map_err(|_| ConfigError::Env {
                var: ENV_HTTP_MAX_CONNECTIONS_PER_PEER,
                message: format!("{v:?} is not a number (0: a quarter of the connection cap)"),
            })?;
        }
        for (key, ms) in [
            ("http.header_timeout_ms", config.http.header_timeout_ms),
            ("http.body_timeout_ms", config.http.body_timeout_ms),
            ("http.idle_timeout_ms", config.http.idle_timeout_ms),
            ("http.shutdown_timeout_ms", config.http.shutdown_timeout_ms),
        ] {
            if ms == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1 millisecond".into(),
                });
            }
        }
        if let Some(v) = env(ENV_OUTBOUND_ALLOW_PRIVATE) {
            config.outbound.allow_private = v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.parse().map(AllowPrivate))
                .collect::<Result<_, _>>()
                .map_err(|message| ConfigError::Env {
                    var: ENV_OUTBOUND_ALLOW_PRIVATE,
                    message,
                })?;
        }
        if let Some(v) = env(ENV_SCIM_ACCEPT_PASSWORDS) {
            config.scim.accept_passwords = v.parse().map_err(|_| ConfigError::Env {
                var: ENV_SCIM_ACCEPT_PASSWORDS,
                message: format!("{v:?} is not true or false"),
            })?;
        }
        if let Some(v) = env(ENV_SCIM_HARD_DELETE) {
            config.scim.hard_delete = v.parse().map_err(|_| ConfigError::Env {
                var: ENV_SCIM_HARD_DELETE,
                message: format!("{v:?} is not true or false"),
            })?;
        }
        if let Some(v) = env(ENV_SCHEDULE_TICK_MS) {
            config.schedules.tick_ms = v.parse().map_err(|_| ConfigError::Env {
                var: ENV_SCHEDULE_TICK_MS,
                message: format!("{v:?} is not a number of milliseconds"),
            })?;
        }
        if let Some(v) = env(ENV_STORAGE_URL) {
            config.storage.url = Some(Secret(v));
        }
        if let Some(url) = &config.storage.url {
            let url = url.expose();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::Invalid {
                    key: "storage.url",
                    // Not repeated: it may hold a password.
                    message: "must be a postgres:// (or postgresql://) URL".into(),
                });
            }
            config.storage.engine = cohort_storage::Engine::Postgres;
        } else if config.storage.engine == cohort_storage::Engine::Postgres {
            return Err(ConfigError::Invalid {
                key: "storage.url",
                message: "the postgres engine needs storage.url (COHORT_STORAGE_URL)".into(),
            });
        }
        if let Some(v) = env(ENV_STORAGE_CONNECTIONS) {
            config.storage.connections = v.parse().map_err(|_| ConfigError::Env {
                var: ENV_STORAGE_CONNECTIONS,
                message: format!("{v:?} is not a number of connections"),
            })?;
        }
        if config.storage.connections == 0 {
            return Err(ConfigError::Invalid {
                key: "storage.connections",
                message: "must be at least 1".into(),
            });
        }
        if config.schedules.tick_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "schedules.tick_ms",
                message: "must be at least 1 millisecond".into(),
            });
        }
        Ok(config)
    }
}

#[path = "config_secret.rs"]
mod secret;
pub use secret::Secret;

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
