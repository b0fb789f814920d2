//! Connections, each on a thread of its own: the `postgres` client blocks
//! on a runtime of its own, which must not run on an async worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::LOCK_TIMEOUT;
use crate::StorageError;

/// TLS as the URL's `sslmode` asks: `prefer` (the default) uses it when the
/// server offers it, `require` insists. The server's certificate must chain
/// to the system's trust store (`update-ca-certificates` for a private CA)
/// and name the host, whichever mode asked for TLS.
pub(super) fn tls() -> Result<MakeRustlsConnect, StorageError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the store cannot parse is one fewer root, not a
        // reason to refuse the rest.
        let _ = roots.add(cert);
    }
    // Deprecated only for lacking post-quantum key exchange; see
    // host/src/outbound.rs.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StorageError::Engine(format!("postgres: TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

pub(super) fn engine(e: postgres::Error) -> StorageError {
    // The server's own message and code, which the client's `Display`
    // leaves out ("db error").
    match e.as_db_error() {
        Some(db) => {
            StorageError::Engine(format!("postgres: {} ({})", db.message(), db.code().code()))
        }
        None => StorageError::Engine(format!("postgres: {e}")),
    }
}

/// One connection, opened on first use and again after it breaks.
pub(super) struct Conn {
    pub(super) config: postgres::Config,
    pub(super) tls: MakeRustlsConnect,
    pub(super) client: Option<Client>,
    pub(super) statements: HashMap<String, Statement>,
    /// Connections opened so far: session locks taken on an earlier one
    /// are gone.
    pub(super) connects: u64,
}

impl Conn {
    pub(super) fn client(&mut self) -> Result<&mut Client, postgres::Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.statements.clear();
            let mut client = self.config.connect(self.tls.clone())?;
            // Durability is the commit: never let a server default weaken it.
            // Read committed, whatever the server's default: the rate
            // buckets' upsert relies on it to order hosts rather than fail.
            // A writer waits for the lease at most LOCK_TIMEOUT, then fails
            // its request, rather than hold its thread for ever behind a
            // host that never lets go.
            // Every statement here reads by key or key range, for which
            // the primary key's index is right at any size. Plans prepared
            // while the table was small (a new database) would otherwise
            // keep scanning all of it as it grows: 3 ms per read at 10,000
            // users, until autovacuum's next analyze.
            // The server notices a host that vanished (power loss, a cut
            // network) within about a minute, not the kernel's two hours,
            // and frees its locks: its lease, its roles, its host number.
            client.batch_execute(&format!(
                "SET synchronous_commit = on; SET lock_timeout = '{}s'; \
                 SET default_transaction_isolation = 'read committed'; \
                 SET enable_seqscan = off; SET tcp_keepalives_idle = 30; \
                 SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3",
                LOCK_TIMEOUT.as_secs()
            ))?;
            self.client = Some(client);
            self.connects += 1;
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// A prepared statement, prepared once per connection.
    pub(super) fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        // Reconnecting clears the cache: statements prepared on a dead
        // session do not exist on the new one.
        self.client()?;
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client()?.prepare(sql)?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

pub(super) type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// Threads that each own one connection and run the jobs they are handed.
pub(super) struct Pool {
    pub(super) tx: Mutex<Option<mpsc::Sender<Job>>>,
    pub(super) threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    pub(super) fn start(
        config: &postgres::Config,
        tls: &MakeRustlsConnect,
        size: usize,
        name: &str,
    ) -> Result<Pool, StorageError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(size);
        for i in 0..size.max(1) {
            let rx = Arc::clone(&rx);
            let mut conn = Conn {
                config: config.clone(),
                tls: tls.clone(),
                client: None,
                statements: HashMap::new(),
                connects: 0,
            };
            let handle = std::thread::Builder::new()
                .name(format!("cohort-pg-{name}-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().recv();
                        match job {
                            Ok(job) => job(&mut conn),
                            Err(_) => return,
                        }
                    }
                })?;
            threads.push(handle);
        }
        Ok(Pool {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Runs `f` on a pooled connection and waits for its answer. A job that
    /// finds its connection broken is retried once on a fresh one when
    /// `retry` is set, which is only safe for reads.
    pub(super) fn run<T: Send + 'static>(
        &self,
        retry: bool,
        f: impl Fn(&mut Conn) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (answer, wait) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn: &mut Conn| {
            let mut result = f(conn);
            if result.as_ref().is_err_and(session_ended)
                || (result.is_err() && conn.client.as_ref().is_none_or(Client::is_closed))
            {
                conn.client = None;
                if retry {
                    result = f(conn);
                }
            }
            let _ = answer.send(result);
        });
        self.tx
            .lock()
            .as_ref()
            .ok_or_else(|| StorageError::Engine("postgres: the store is closed".into()))?
            .send(job)
            .map_err(|_| StorageError::Engine("postgres: connection threads stopped".into()))?;
        wait.recv()
            .map_err(|_| StorageError::Engine("postgres: a connection thread stopped".into()))?
            .map_err(engine)
    }
}

/// Whether `e` says the session is over: the server ended it (a restart,
/// `pg_terminate_backend`: SQLSTATE class 57, operator intervention, but for
/// 57014, a cancelled statement, after which the session goes on) or the
/// connection closed, which the client may learn only from this error.
fn session_ended(e: &postgres::Error) -> bool {
    e.is_closed()
        || e.code()
            .is_some_and(|c| c.code().starts_with("57") && c.code() != "57014")
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx.lock().take();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}
