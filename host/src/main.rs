//! The `cohort` command: serve the directory, back it up, restore it, move
//! it between storage engines, and administer it over the API.

mod cli;

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use cohort::clock::{Clock, SystemClock};
use cohort::config::Config;
use cohort::plugins::secrets::SecretBox;
use tracing_subscriber::util::SubscriberInitExt as _;

/// glibc's allocator spends most of a membership update in `malloc` once the
/// store's cache has fragmented the heap; mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Cohort: a self-hosted directory of users, devices and groups.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// TOML configuration file. Environment variables (COHORT_LISTEN,
    /// COHORT_DATA_DIR, COHORT_BOOTSTRAP_ADMIN_KEY, COHORT_LOG_FORMAT,
    /// COHORT_LOG_LEVEL, COHORT_PLUGINS_DIR, COHORT_PLUGIN_CACHE_DIR,
    /// COHORT_SECRET_KEY, COHORT_TRUSTED_PROXIES, …) override it; defaults
    /// apply to anything unset.
    #[arg(long, global = true, env = "COHORT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (default: 127.0.0.1:8080, data in ./data). On first
    /// start it creates an admin API key: COHORT_BOOTSTRAP_ADMIN_KEY when
    /// set, otherwise a generated one printed once.
    Serve,
    /// Write a consistent backup of a running server to a file, over its
    /// HTTP API (needs an admin key). With --offline, read the data directory
    /// of a stopped server instead.
    Backup {
        /// The backup file to write.
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// Base URL of the running server; defaults to the configured
        /// listen address.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Admin API key for the running server.
        #[arg(long, env = "COHORT_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Read the configured data directory directly (the server must be stopped).
        #[arg(long)]
        offline: bool,
    },
    /// Load a backup into an empty data directory (the configured one unless
    /// --data-dir is given). The server must not be running on it. The
    /// backup must be authenticated with the secret key of the server that
    /// wrote it: --key-file, or the configured secret_key / COHORT_SECRET_KEY.
    Restore {
        /// The backup file to read.
        #[arg(long, short, value_name = "FILE")]
        input: PathBuf,
        /// Target data directory; must be empty or absent.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// The secret key file of the server that wrote the backup (its
        /// `<data_dir>/secret.key`). It is copied into the restored data
        /// directory, unless a secret key is configured.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Also accept a backup written before backups were authenticated
        /// (format version 1), which anyone could have edited. Only for a
        /// file you know is yours.
        #[arg(long)]
        allow_unauthenticated: bool,
    },
    /// Copy a whole directory to another storage engine, then read the copy
    /// back and compare entry counts and checksums. The target must be
    /// empty, and no server may run on either while this runs. Locations
    /// are fjall:DIR, sled:DIR or a postgres:// URL.
    Migrate {
        /// Where the directory is now.
        #[arg(long, value_name = "LOCATION")]
        from: cohort::engines::Location,
        /// Where it goes.
        #[arg(long, value_name = "LOCATION")]
        to: cohort::engines::Location,
    },
    /// Print the OpenAPI document of the admin API.
    Openapi,
    /// Users, over the admin API of a running server.
    Users {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::Users,
    },
    /// Groups, over the admin API of a running server.
    Groups {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::Groups,
    },
    /// API keys, over the admin API of a running server.
    Keys {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::Keys,
    },
    /// Imports, over the admin API of a running server.
    Import {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::Import,
    },
    /// Plugin authoring: check and package a built component without a
    /// server, upload or upgrade it.
    Plugin {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::plugin::Plugin,
    },
}

fn init_logging(config: &Config) {
    cohort::server::log_subscriber(config, std::io::stderr).init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .context("creating a temporary file next to the output")?;
    fill(tmp.as_file_mut())?;
    tmp.as_file_mut().sync_all()?;
    tmp.persist(path).context("moving the backup into place")?;
    Ok(())
}

async fn backup(
    config: &Config,
    output: &Path,
    server: Option<String>,
    api_key: Option<String>,
    offline: bool,
) -> anyhow::Result<()> {
    if offline {
        // Opened, not migrated: a backup must not upgrade the schema under
        // servers that still run the older version.
        let store = cohort_storage::Store::open(&config.data_dir, &config.storage.open_options())
            .with_context(|| format!("opening {}", config.data_dir.display()))?;
        let secrets = SecretBox::open(config.secret_key.as_ref(), &config.data_dir)?;
        let mut summary = None;
        write_atomically(output, |f| {
            let mut w = std::io::BufWriter::new(f);
            let created = Clock::now(&SystemClock).timestamp();
            summary = Some(store.export(
                &mut w,
                secrets.backup_key(),
                u64::try_from(created).unwrap_or(0),
            )?);
            w.flush()?;
            Ok(())
        })?;
        if let Some(s) = summary {
            eprintln!(
                "backup written: {} entries, schema version {}",
                s.entries, s.schema_version
            );
        }
        return Ok(());
    }
    let Some(key) = api_key else {
        bail!(
            "an admin API key is needed: pass --api-key or set COHORT_API_KEY (or use --offline on a stopped server)"
        );
    };
    let base = server.unwrap_or_else(|| format!("http://{}", config.listen));
    let url = format!("{}/api/v1/backup", base.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth(key)
        .send()
        .await
        .with_context(|| format!("contacting {url}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        bail!("server refused the backup ({status}): {body}");
    }
    let bytes = resp.bytes().await.context("reading the backup")?;
    write_atomically(output, |f| {
        f.write_all(&bytes)?;
        Ok(())
    })?;
    eprintln!(
        "backup written to {} ({} bytes)",
        output.display(),
        bytes.len()
    );
    Ok(())
}

/// How `cohort restore` was asked to check the file.
struct RestoreKey {
    key_file: Option<PathBuf>,
    allow_unauthenticated: bool,
}

fn restore(
    config: &Config,
    input: &Path,
    data_dir: Option<PathBuf>,
    key: RestoreKey,
) -> anyhow::Result<()> {
    let target = data_dir.unwrap_or_else(|| config.data_dir.clone());
    // The data directory is empty (a restore needs it so), so the key the
    // backup was written with comes from outside it.
    let secrets = match (&key.key_file, &config.secret_key) {
        (Some(file), _) => SecretBox::from_key_file(file)
            .with_context(|| format!("reading the key file {}", file.display()))?,
        (None, Some(configured)) => SecretBox::open(Some(configured), &target)?,
        (None, None) => bail!(
            "restoring needs the secret key of the server that wrote the backup, to check \
             that nobody changed it: pass --key-file <that server's data_dir>/secret.key, or \
             set COHORT_SECRET_KEY"
        ),
    };
    let file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let summary = cohort_storage::restore_into(
        &target,
        &mut BufReader::new(file),
        &config.storage.open_options(),
        cohort_storage::Verify {
            key: secrets.backup_key(),
            allow_unauthenticated: key.allow_unauthenticated,
        },
    )?;
    // Sealed plugin secrets open only with the key they were sealed with:
    // the restored directory gets it, unless the configuration names one.
    if let (Some(file), None) = (&key.key_file, &config.secret_key) {
        // On PostgreSQL the restore wrote to the database, and the data
        // directory (this host's own files) may not exist yet.
        std::fs::create_dir_all(&target)?;
        install_key(file, &target.join("secret.key"))?;
    }
    eprintln!(
        "restored {} entries (schema version {}) into {}",
        summary.entries,
        summary.schema_version,
        target.display()
    );
    Ok(())
}

fn migrate(
    config: &Config,
    from: &cohort::engines::Location,
    to: &cohort::engines::Location,
) -> anyhow::Result<()> {
    // `postgres` alone: the configured database, password kept off argv.
    let configured = |l: &cohort::engines::Location| -> anyhow::Result<cohort::engines::Location> {
        let mut l = l.clone();
        if l.engine == cohort_storage::Engine::Postgres && l.url.is_none() {
            let Some(url) = &config.storage.url else {
                bail!(
                    "`postgres` names the configured database, and none is configured: set COHORT_STORAGE_URL"
                );
            };
            l.url = Some(url.expose().to_string());
        }
        Ok(l)
    };
    let (from, to) = (&configured(from)?, &configured(to)?);
    // The scratch copy goes next to an embedded target, where there is
    // room for the data by definition, or else to the temporary folder.
    let scratch = match to.url {
        None => to
            .dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        Some(_) => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&scratch)?;
    let created = u64::try_from(Clock::now(&SystemClock).timestamp()).unwrap_or(0);
    eprintln!("copying {from} to {to} …");
    let moved = cohort::engines::move_store(
        from,
        to,
        (
            config.storage.cache_mb * 1024 * 1024,
            config.storage.connections,
        ),
        &scratch,
        created,
    )
    .with_context(|| format!("migrating {from} to {to}"))?;
    println!(
        "{{\"entries\":{},\"schema_version\":{},\"sha256\":\"{}\"}}",
        moved.entries, moved.schema_version, moved.sha256
    );
    eprintln!(
        "copied and verified {} entries (schema version {}); the target reads back with the same checksum",
        moved.entries, moved.schema_version
    );
    if from.url.is_none() && from.dir.join("secret.key").exists() {
        eprintln!(
            "the directory's secret key stays in {}: give every server of the target the same \
             key (secret_key or COHORT_SECRET_KEY, or that file in its data directory), or it \
             cannot open sealed plugin secrets or check backups",
            from.dir.join("secret.key").display()
        );
    }
    Ok(())
}

async fn admin(config: &Config, target: &cli::Target, command: cli::Admin) -> anyhow::Result<()> {
    cli::run(target, &format!("http://{}", config.listen), command).await
}

/// Copies a key file, readable by its owner only.
fn install_key(from: &Path, to: &Path) -> anyhow::Result<()> {
    let text = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(to)
        .with_context(|| format!("writing {}", to.display()))?;
    f.write_all(&text)?;
    f.sync_all()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    cohort::outbound::install_tls();
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), |k| std::env::var(k).ok())?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http.worker_threads_for(config.storage.engine, cores))
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(cli, config))
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => {
            init_logging(&config);
            cohort::server::serve(config, shutdown_signal()).await?;
        }
        Command::Backup {
            output,
            server,
            api_key,
            offline,
        } => backup(&config, &output, server, api_key, offline).await?,
        Command::Restore {
            input,
            data_dir,
            key_file,
            allow_unauthenticated,
        } => restore(
            &config,
            &input,
            data_dir,
            RestoreKey {
                key_file,
                allow_unauthenticated,
            },
        )?,
        Command::Migrate { from, to } => migrate(&config, &from, &to)?,
        Command::Openapi => println!("{}", cohort::api::openapi_json()),
        Command::Users { target, command } => {
            admin(&config, &target, cli::Admin::Users(command)).await?
        }
        Command::Groups { target, command } => {
            admin(&config, &target, cli::Admin::Groups(command)).await?
        }
        Command::Keys { target, command } => {
            admin(&config, &target, cli::Admin::Keys(command)).await?
        }
        Command::Import { target, command } => {
            admin(&config, &target, cli::Admin::Import(command)).await?
        }
        Command::Plugin { target, command } => {
            cli::plugin::run(
                &target,
                &format!("http://{}", config.listen),
                &config,
                command,
            )
            .await?
        }
    }
    Ok(())
}
