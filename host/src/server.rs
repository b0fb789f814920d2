//! Wires the pieces together and runs the HTTP server until shutdown.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use cohort_storage::{OpenOptions, StorageError, Store};
use tokio::net::TcpListener;

use crate::api::{self, AppState, metrics::Metrics};
use crate::audit::AuditLog;
use crate::auth::ApiKeys;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::credentials::Credentials;
use crate::directory::Directory;
use crate::error::DomainError;
use crate::federation::SignIn;
use crate::federation::flow::Settings;
use crate::groups::Groups;
use crate::migrations::MIGRATIONS;
use crate::plugins::secrets::SecretBox;
use crate::plugins::{Instances, Limits, Registry, Runtime};
use crate::sessions::Sessions;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened or migrated.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Bootstrapping failed.
    #[error("{0}")]
    Domain(#[from] DomainError),
    /// Serving HTTP failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    /// The plugin runtime or the secret key could not be set up.
    #[error("plugins: {0}")]
    Plugins(String),
    /// A setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

/// A started application: the state handlers share, and the bootstrap key
/// when one was generated.
pub struct App {
    /// Shared state.
    pub state: AppState,
    /// A freshly generated admin key, to be shown once.
    pub generated_admin_key: Option<String>,
}

/// Opens the store in the data directory and migrates it.
pub fn open_store(data_dir: &Path, options: &OpenOptions) -> Result<Store, StorageError> {
    // The data directory holds this host's own files (the secret key, the
    // compiled plugin cache) on every engine, PostgreSQL included.
    std::fs::create_dir_all(data_dir)?;
    let store = Store::open(data_dir, options)?;
    let version = store.migrate(MIGRATIONS)?;
    match &options.url {
        Some(url) => {
            tracing::info!(schema_version = version, engine = %options.engine, database = %cohort_storage::redact_url(url), "storage ready")
        }
        None => {
            tracing::info!(schema_version = version, engine = %options.engine, data_dir = %data_dir.display(), "storage ready")
        }
    }
    Ok(store)
}

/// Builds the application over an open store.
pub fn build(config: &Config, store: Store, clock: Arc<dyn Clock>) -> Result<App, ServerError> {
    let keys = ApiKeys::new(store.clone(), Arc::clone(&clock));
    let generated_admin_key = keys.bootstrap(config.bootstrap_admin_key.as_ref())?;
    // One policy for the server's own requests and its plugins'.
    let outbound = Arc::new(crate::outbound::Outbound::new(config.outbound.policy()));
    let runtime = Arc::new(
        Runtime::new(
            Limits::from_config(&config.plugins)
                .with_outbound(Arc::clone(&outbound))
                .with_clock(Arc::clone(&clock)),
            Some(
                &config
                    .plugins
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| config.data_dir.join("cache").join("components")),
            ),
            Arc::clone(&clock),
        )
        .map_err(|e| ServerError::Plugins(e.to_string()))?,
    );
    let registry = Registry::open(
        runtime,
        store.clone(),
        Arc::clone(&clock),
        config.plugins.directory.as_deref(),
        if config.plugins.builtin {
            crate::plugins::BUILTIN
        } else {
            &[]
        },
    )?;
    let secrets = SecretBox::open(config.secret_key.as_ref(), &config.data_dir)
        .map_err(|e| ServerError::Plugins(e.to_string()))?;
    let backup_key = secrets.backup_key().clone();
    let instances = Instances::new(
        store.clone(),
        Arc::clone(&clock),
        registry.clone(),
        secrets.clone(),
    );
    let groups = Groups::open(store.clone(), Arc::clone(&clock), registry.clone())
        .map_err(|e| ServerError::Plugins(format!("groups: {e}")))?;
    let federation = crate::federation::Federation::new(
        store.clone(),
        Arc::clone(&clock),
        registry.clone(),
        instances.clone(),
        outbound,
    )?;
    let device_credentials =
        crate::devices::DeviceCredentials::new(store.clone(), Arc::clone(&clock));
    let directory = Directory::new(store.clone(), Arc::clone(&clock))
        .with_listener(Arc::new(groups.clone()))
        .with_listener(Arc::new(device_credentials.clone()));
    let collisions = directory.report_identity_collisions()?;
    if collisions > 0 {
        tracing::warn!(
            count = collisions,
            "users sharing one username or email were found; see the audit log (action user.identity_collision)"
        );
    }
    let devices = crate::devices::Devices::new(
        store.clone(),
        Arc::clone(&clock),
        directory.clone(),
        groups.clone(),
        device_credentials,
    );
    let public_url = public_url(config)?;
    let sessions = Sessions::open(
        store.clone(),
        Arc::clone(&clock),
        secrets,
        public_url.clone(),
        chrono::Duration::hours(config.sign_in.session_hours.max(1) as i64),
        chrono::Duration::minutes(config.sign_in.token_minutes.max(1) as i64),
    )?;
    let credentials = Credentials::new(store.clone(), Arc::clone(&clock), public_url.clone());
    let sign_in = SignIn::new(
        store.clone(),
        federation.clone(),
        directory.clone(),
        sessions,
        credentials.clone(),
        Settings {
            public_url,
            allowed_redirects: config.sign_in.allowed_redirects.clone(),
            rate_limit: crate::federation::throttle::Policy {
                per_address: config.sign_in.rate_limit.per_address_per_minute,
                per_identifier: config.sign_in.rate_limit.per_identifier_per_minute,
                period: chrono::Duration::minutes(1),
                max_tracked: config.sign_in.rate_limit.max_tracked,
            },
        },
    )?;
    let scim = crate::provisioning::scim::Scim::new(
        store.clone(),
        Arc::clone(&clock),
        directory.clone(),
        groups.clone(),
        credentials.clone(),
        crate::provisioning::scim::Settings {
            hard_delete: config.scim.hard_delete,
            accept_passwords: config.scim.accept_passwords,
            public_url: sign_in.public_url().to_string(),
            max_payload: config.http.max_body_bytes,
        },
    );
    let imports = crate::provisioning::imports::Imports::new(
        store.clone(),
        Arc::clone(&clock),
        directory.clone(),
        instances.clone(),
    );
    let state = AppState {
        devices,
        imports,
        federation,
        sign_in,
        credentials,
        scim,
        directory,
        groups,
        access: crate::access::Access::new(store.clone(), Arc::clone(&clock)),
        audit: AuditLog::new(store.clone()),
        keys,
        replication: Arc::new(crate::replication::Replication::new(
            store.clone(),
            Arc::clone(&clock),
        )),
        store,
        metrics: Arc::new(Metrics::default()),
        data_dir: config.data_dir.clone(),
        max_body_bytes: config.http.max_body_bytes,
        openapi: Arc::new(api::openapi_json()),
        plugins: registry,
        instances,
        max_upload_bytes: (config.plugins.max_upload_mb as usize) << 20,
        trusted_proxies: Arc::new(api::client::TrustedProxies::new(
            config.http.trusted_proxies.iter().map(|p| p.0).collect(),
        )),
        backup_key,
        clock,
    };
    Ok(App {
        state,
        generated_admin_key,
    })
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains
/// in-flight requests and flushes storage.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    limits: crate::serving::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let store = state.store.clone();
    crate::serving::serve(listener, api::router(state), limits, shutdown).await;
    tracing::info!("shutting down: flushing storage");
    store.flush()?;
    Ok(())
}

/// Opens, builds and serves with the real clock; what `cohort serve` does.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // Before anything opens files: the connection cap is derived from it.
    let fd_limit = crate::serving::raise_fd_limit();
    let limits = crate::serving::Limits::resolve(&config.http, fd_limit);
    let store = open_store(&config.data_dir, &config.storage.open_options())?;
    // Bound before building, so that the default public URL has the real
    // port when listening on port 0.
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let mut config = config;
    if config.sign_in.public_url.is_none() {
        config.sign_in.public_url = Some(format!("http://{addr}"));
    }
    // Building compiles plugins (and may call them), which blocks.
    let build_config = config.clone();
    let app =
        tokio::task::spawn_blocking(move || build(&build_config, store, Arc::new(SystemClock)))
            .await
            .map_err(|e| ServerError::Plugins(e.to_string()))??;
    if let Some(key) = &app.generated_admin_key {
        // Printed, never logged: logs are shipped and kept; this is shown once.
        println!(
            "Cohort created the first admin API key. It is shown only this once; store it now:\n\n    {key}\n"
        );
    }
    spawn_full_recomputes(
        app.state.store.clone(),
        Arc::clone(&app.state.replication),
        app.state.groups.clone(),
        config.groups.full_recompute_hours,
    );
    spawn_sweeps(app.state.sign_in.clone());
    crate::replication::spawn(Arc::clone(&app.state.replication));
    spawn_credential_usage_flush(app.state.devices.clone());
    spawn_schedules(
        app.state.store.clone(),
        Arc::clone(&app.state.replication),
        app.state.imports.clone(),
        app.state.groups.clone(),
        std::time::Duration::from_millis(config.schedules.tick_ms),
    );
    tracing::info!(
        listen = %addr,
        max_connections = limits.max_connections,
        max_connections_per_peer = limits.max_per_peer,
        fd_limit,
        header_timeout_ms = config.http.header_timeout_ms,
        body_timeout_ms = config.http.body_timeout_ms,
        idle_timeout_ms = config.http.idle_timeout_ms,
        shutdown_timeout_ms = config.http.shutdown_timeout_ms,
        "cohort is serving"
    );
    // Scripts and tests read this line to learn the port when listening on :0.
    println!("listening on http://{addr}");
    run(listener, app.state, limits, shutdown).await
}

/// The subscriber that writes the server's log to `writer`, as `[log]`
/// says (level filter, JSON or text). The binary installs it for the
/// process; an embedding (the in-process test harness) for its own threads.
pub fn log_subscriber<W>(
    config: &Config,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync + 'static>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // The PostgreSQL client logs every statement's parameters at debug:
        // every stored key and value (password hashes, personal data).
        // Never, whatever the level asked for.
        .add_directive(QUIET_DATABASE_CLIENT[0].parse().expect("a fixed directive"))
        .add_directive(QUIET_DATABASE_CLIENT[1].parse().expect("a fixed directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match config.log.format {
        crate::config::LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
        crate::config::LogFormat::Text => Box::new(builder.finish()),
    }
}

/// Log levels for the PostgreSQL client's own targets (see `log_subscriber`).
const QUIET_DATABASE_CLIENT: [&str; 2] = ["tokio_postgres=info", "postgres=info"];

/// Cohort's public URL, checked, without a trailing slash.
fn public_url(config: &Config) -> Result<String, ServerError> {
    let url = config
        .sign_in
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen));
    let url = url.trim_end_matches('/').to_string();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['?', '#']) => Ok(url),
        _ => Err(ServerError::Config(format!(
            "sign_in.public_url {url:?} must be an http:// or https:// URL without query"
        ))),
    }
}

/// Every `tick` (`[schedules] tick_ms`): starts the import schedules that
/// are due, and lets group exemptions lapse once the clock has passed their
/// expiry. Each look costs a scan of the (few) schedules and a comparison
/// with the next expiry.
// The loop's period is real time between looks; what is due is the clock's.
#[allow(clippy::disallowed_methods)]
fn spawn_schedules(
    store: Store,
    replication: Arc<crate::replication::Replication>,
    imports: crate::provisioning::imports::Imports,
    groups: Groups,
    tick: std::time::Duration,
) {
    tokio::spawn(async move {
        let mut stopped = crate::replication::StoppedHosts::new(tick);
        loop {
            tokio::time::sleep(tick).await;
            if !leads(&store, &replication, crate::replication::SCHEDULES).await {
                stopped = crate::replication::StoppedHosts::new(tick);
                continue;
            }
            stopped = close_interrupted_runs(&store, &imports, &groups, stopped, tick).await;
            if let Err(e) = imports.run_due().await {
                tracing::warn!(error = %e, "could not start scheduled imports");
            }
            if let Err(e) = groups.apply_lapsed_exemptions().await {
                tracing::warn!(error = %e, "could not apply lapsed exemptions");
            }
        }
    });
}

/// Marks as failed the import and recompute runs whose host stopped: a host
/// that dies mid-run cannot say so itself. Each look reads the running runs
/// (an index for imports, the pruned history for recomputes) and asks the
/// database about each of their hosts.
async fn close_interrupted_runs(
    store: &Store,
    imports: &crate::provisioning::imports::Imports,
    groups: &Groups,
    mut stopped: crate::replication::StoppedHosts,
    tick: std::time::Duration,
) -> crate::replication::StoppedHosts {
    let (store, imports, groups) = (store.clone(), imports.clone(), groups.clone());
    let looked = tokio::task::spawn_blocking(move || {
        let closed = (|| {
            let mut hosts = imports.running_hosts()?;
            hosts.extend(groups.running_hosts()?);
            let gone = stopped.confirm(&store, hosts)?;
            if gone.is_empty() {
                return Ok::<_, DomainError>((0, 0));
            }
            let is_gone = |h: Option<u32>| gone.contains(&h);
            Ok((
                imports.fail_interrupted(&is_gone)?,
                groups.close_interrupted_runs(&is_gone)?,
            ))
        })();
        (closed, stopped)
    })
    .await;
    match looked {
        Ok((Ok((0, 0)), stopped)) => stopped,
        Ok((Ok((imports, recomputes)), stopped)) => {
            tracing::warn!(
                imports,
                recomputes,
                "runs whose host stopped were marked failed"
            );
            stopped
        }
        Ok((Err(e), stopped)) => {
            tracing::warn!(error = %e, "could not close the runs of stopped hosts");
            stopped
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not close the runs of stopped hosts");
            crate::replication::StoppedHosts::new(tick)
        }
    }
}

/// Whether this host runs `role`'s work now. A failure to ask counts as no:
/// the work waits for a host that can reach the database.
async fn leads(
    store: &Store,
    replication: &crate::replication::Replication,
    role: &'static str,
) -> bool {
    let store = store.clone();
    let now = match tokio::task::spawn_blocking(move || store.lead(role)).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, role, "could not ask who runs the scheduled work");
            false
        }
        Err(_) => false,
    };
    if replication.set_runs_scheduled_work(now) && now {
        tracing::info!(role, "this host now runs the scheduled work");
    }
    now
}

/// Removes expired sessions and abandoned sign-ins every few minutes.
// The loop's period is real time between housekeeping runs; what each run
// does reads the injected clock.
#[allow(clippy::disallowed_methods)]
fn spawn_sweeps(sign_in: SignIn) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(300)).await;
            match sign_in.sessions().sweep().await {
                Ok(n) if n > 0 => tracing::debug!(sessions = n, "expired sessions removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not sweep sessions"),
            }
            if let Err(e) = sign_in.sweep().await {
                tracing::warn!(error = %e, "could not sweep pending sign-ins");
            }
        }
    });
}

/// Writes the last-used times of device credentials once a minute (see
/// `devices::credentials` for why not on every use).
// The loop's period is real time between housekeeping runs; what each run
// does reads the injected clock.
#[allow(clippy::disallowed_methods)]
fn spawn_credential_usage_flush(devices: crate::devices::Devices) {
    tokio::spawn(async move {
        let every = std::time::Duration::from_secs(crate::devices::USAGE_FLUSH_SECONDS);
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = devices.credentials().flush_usage().await {
                tracing::warn!(error = %e, "could not record device credential use");
            }
        }
    });
}

/// A full recompute at start-up (memberships may be stale if the rule
/// evaluator was missing last time, or relative dates moved on), then every
/// `hours` hours.
// The loop's period is real time between housekeeping runs; what each run
// does reads the injected clock.
#[allow(clippy::disallowed_methods)]
fn spawn_full_recomputes(
    store: Store,
    replication: Arc<crate::replication::Replication>,
    groups: Groups,
    hours: u64,
) {
    tokio::spawn(async move {
        // Every host at its start: its own rule evaluators may differ.
        start_scheduled_recompute(&groups, "startup").await;
        if hours == 0 {
            return;
        }
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(hours * 3600)).await;
            // Then once for all hosts.
            if leads(&store, &replication, crate::replication::SCHEDULES).await {
                start_scheduled_recompute(&groups, "schedule").await;
            }
        }
    });
}

/// Starts a full recompute on the server's own behalf; `trigger` says why
/// ("startup", "schedule"). Public so that an embedding (the in-process test
/// harness) starts up as `serve` does.
pub async fn start_scheduled_recompute(groups: &Groups, trigger: &str) {
    let actor = crate::auth::Actor::system("scheduled-recompute");
    if let Err(e) = groups.start_recompute(&actor, trigger).await {
        tracing::error!(error = %e, "could not start a full group recompute");
    }
}
