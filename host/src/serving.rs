//! The HTTP accept loop, with the timeouts and the connection cap that keep
//! one client from taking the server off the air.
//!
//! `axum::serve` reads headers, bodies and idle keep-alive connections for
//! as long as the client likes and accepts connections until the process
//! runs out of file descriptors, at which point nothing, `/healthz`
//! included, gets in. So the server runs its own loop over hyper's HTTP/1
//! connection (HTTP/2 was never enabled):
//!
//! - a connection whose request headers take longer than
//!   `http.header_timeout_ms` is closed. The clock starts when the
//!   connection is accepted, and again at the first byte of each following
//!   request ([`Watched`] sees the bytes). hyper's own header timeout is
//!   not used: it also runs while a keep-alive connection waits for its
//!   next request, which would make the idle timeout the header timeout;
//! - a request body that takes longer than `http.body_timeout_ms` from the
//!   end of its headers fails to read ([`TimedBody`]), which ends the
//!   request with a 4xx and closes the connection;
//! - a connection with no request in progress for `http.idle_timeout_ms`
//!   is closed;
//! - at most `http.max_connections` are open. At the cap, the connection
//!   that has been *waiting on its client* longest is closed to admit the
//!   new one, as HAProxy and nginx do for idle ones, so slow clients cannot
//!   starve real ones. A connection waits on its client while it has no
//!   request in progress (an idle keep-alive connection, or a slowloris
//!   client still dribbling its headers; since the accept or the end of its
//!   last request) and while its request's body is still arriving (since
//!   the end of the headers). Only a request whose body is fully read (or
//!   that has none) and that the server is handling is never closed: the
//!   work is the server's, and the client is owed its answer. Counting a
//!   body that is still arriving as "in progress" let anyone hold every
//!   slot with `POST /sign-in` bodies sent one byte at a time (issue #23).
//!   The ranking is by how long the wait has lasted, not by the last byte
//!   received, so dribbling faster buys nothing, and a connection just
//!   accepted (a health check) is the youngest and goes last. Only when no
//!   connection waits on its client is the new one closed unanswered;
//! - at most `http.max_connections_per_peer` connections are open from one
//!   peer address (the socket's peer: this layer sees no headers). At that
//!   limit, the same ranking closes one of that peer's own connections, so
//!   one address cannot churn through everybody's. Peers in
//!   `http.trusted_proxies` are exempt: behind a proxy every client shares
//!   the proxy's address.
//!
//! A warning is logged when a limit is reached, at most once every
//! [`WARN_EVERY`] for each.
//!
//! Shutdown is graceful: the loop stops accepting, every connection
//! finishes the request it is serving and closes, and `serve` returns when
//! all have, or when `http.shutdown_timeout_ms` has passed, whichever is
//! first; then the connections left (a client dribbling a body, a handler
//! stuck) are closed, so that a slow client cannot hold the process past
//! its supervisor's patience and have it killed before the store is
//! flushed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::clock::Stopwatch;
use crate::config::HttpConfig;

/// At most one "connection cap reached" warning per this long.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// File descriptors kept for everything but connections: the store's files,
/// plugins, outgoing HTTP, logs.
const RESERVED_FDS: u64 = 256;

/// The default cap when the open-file limit allows more: enough for every
/// client of a directory service and its proxies, few enough that their
/// buffers stay in the low hundreds of megabytes.
const MAX_DEFAULT_CONNECTIONS: u64 = 10_000;

/// The per-peer limit when `http.max_connections_per_peer` is 0: this
/// fraction of the cap. One address (one NAT, one office) may still open
/// hundreds of connections at the default cap, while it takes four
/// addresses to fill the server.
const PER_PEER_DIVISOR: usize = 4;

/// A request body arriving slower than this (averaged since the end of its
/// headers) marks a client that holds a slot rather than uses it: such a
/// connection may be closed to make room. 1 KiB/s is far below any real
/// link (an upload over a 300 kbit/s line is 37 KiB/s), while an attacker
/// must now spend real bandwidth per slot to keep it.
const MIN_BODY_BYTES_PER_SECOND: u64 = 1024;

/// The shortest span a body's pace is judged over, in ms: a body must bring
/// 1 KiB in its first second to be safe from eviction. Judging from the
/// first moment (rather than after a grace period) matters: a grace period
/// would let an attacker keep every slot by reopening connections faster
/// than they leave it. A real request's body is either fully in (and then
/// never closed) or arriving at its link's pace.
const BODY_RATE_WINDOW_MS: u64 = 1000;

/// How long, after the drain deadline, the connections still open get to
/// close once told to.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The settings of the loop, resolved from [`HttpConfig`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// See `http.header_timeout_ms`.
    pub header_timeout: Duration,
    /// See `http.body_timeout_ms`.
    pub body_timeout: Duration,
    /// See `http.idle_timeout_ms`.
    pub idle_timeout: Duration,
    /// See `http.max_connections`, resolved.
    pub max_connections: usize,
    /// See `http.max_connections_per_peer`, resolved.
    pub max_per_peer: usize,
    /// Peers the per-peer limit does not apply to: `http.trusted_proxies`.
    pub unlimited_peers: Arc<[ipnet::IpNet]>,
    /// See `http.shutdown_timeout_ms`.
    pub shutdown_timeout: Duration,
}

impl Limits {
    /// The limits `http` asks for, with the connection cap derived from (or
    /// held below) `fd_limit`, the process's open-file limit (`None`:
    /// unlimited).
    pub fn resolve(http: &HttpConfig, fd_limit: Option<u64>) -> Limits {
        let ceiling = fd_limit.map_or(MAX_DEFAULT_CONNECTIONS, |n| {
            n.saturating_sub(RESERVED_FDS).max(16)
        });
        let max_connections = if http.max_connections == 0 {
            fd_limit.map_or(MAX_DEFAULT_CONNECTIONS, |n| {
                (n / 2).clamp(16, MAX_DEFAULT_CONNECTIONS)
            })
        } else if http.max_connections as u64 > ceiling {
            tracing::warn!(
                configured = http.max_connections,
                fd_limit,
                used = ceiling,
                "http.max_connections is above the open file limit; using less"
            );
            ceiling
        } else {
            http.max_connections as u64
        };
        let max_connections = usize::try_from(max_connections).unwrap_or(usize::MAX);
        let max_per_peer = match http.max_connections_per_peer {
            0 => (max_connections / PER_PEER_DIVISOR).max(1),
            n => n.min(max_connections),
        };
        Limits {
            header_timeout: Duration::from_millis(http.header_timeout_ms),
            body_timeout: Duration::from_millis(http.body_timeout_ms),
            idle_timeout: Duration::from_millis(http.idle_timeout_ms),
            max_connections,
            max_per_peer,
            unlimited_peers: http.trusted_proxies.iter().map(|p| p.0).collect(),
            shutdown_timeout: Duration::from_millis(http.shutdown_timeout_ms),
        }
    }
}

/// Raises the soft open-file limit to the hard one, so the connection cap
/// can be generous, and returns the limit in effect (`None`: unlimited).
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum,
            Err(e) => tracing::debug!(error = %e, "cannot raise the open file limit"),
        }
    }
    limit.current
}

/// One open connection, as the cap sees it.
struct Conn {
    /// The socket's peer, canonical (an IPv4 client of a dual-stack
    /// listener is its IPv4 address).
    peer: IpAddr,
    /// Whether `http.max_connections_per_peer` applies to it.
    limited: bool,
    /// Requests in progress.
    busy: AtomicUsize,
    /// Since when the request in progress has been waiting for the rest of
    /// its body, in ms since the registry's epoch, plus one (0: not).
    reading_since: AtomicU64,
    /// Body bytes the request in progress has received so far.
    body_bytes: AtomicU64,
    /// Since when no request has been in progress, in ms since the
    /// registry's epoch.
    idle_since: AtomicU64,
    /// Since when request headers have been arriving with no request in
    /// progress yet, in ms since the registry's epoch, plus one (0: not).
    head_since: AtomicU64,
    /// Wakes the connection's task to close it.
    close: Notify,
    /// Signalled once its socket is closed.
    gone: Notify,
}

/// The open connections.
struct Registry {
    epoch: Stopwatch,
    cap: usize,
    per_peer: usize,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Open connections per limited peer, so that an accept need not count
    /// them all. Locked after `conns`, never alone while changing them.
    by_peer: Mutex<HashMap<IpAddr, usize>>,
    next: AtomicU64,
    /// When the cap warning was last logged (ms since epoch + 1; 0: never).
    warned: AtomicU64,
    evicted: AtomicU64,
    refused: AtomicU64,
    /// As the three above, for the per-peer limit.
    warned_peer: AtomicU64,
    evicted_peer: AtomicU64,
    refused_peer: AtomicU64,
}

impl Registry {
    fn new(cap: usize, per_peer: usize) -> Registry {
        Registry {
            epoch: Stopwatch::start(),
            cap: cap.max(1),
            per_peer: per_peer.max(1),
            conns: Mutex::new(HashMap::new()),
            by_peer: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            warned: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            warned_peer: AtomicU64::new(0),
            evicted_peer: AtomicU64::new(0),
            refused_peer: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection from `peer`, closing the connection that
    /// has waited on its client longest when at the cap, or that peer's
    /// when the peer is at its limit (returned third, to wait for); `None`
    /// when no connection that could go waits on its client.
    fn admit(&self, peer: IpAddr, limited: bool) -> Option<(u64, Arc<Conn>, Option<Arc<Conn>>)> {
        let mut conns = self.conns();
        let mut evicted = None;
        // A limit at the cap is no limit: the cap's own warning says more.
        let peer_full = limited
            && self.per_peer < self.cap
            && self.by_peer().get(&peer).copied().unwrap_or(0) >= self.per_peer;
        if peer_full || conns.len() >= self.cap {
            let now = self.now();
            let victim = conns
                .iter()
                .filter(|(_, c)| !peer_full || (c.limited && c.peer == peer))
                .filter_map(|(id, c)| c.waiting_since(now).map(|t| (t, *id)))
                .min()
                .map(|(_, id)| id);
            let (evicted_count, refused_count) = if peer_full {
                (&self.evicted_peer, &self.refused_peer)
            } else {
                (&self.evicted, &self.refused)
            };
            match victim.and_then(|id| self.take(&mut conns, id)) {
                Some(c) => {
                    c.close.notify_one();
                    evicted_count.fetch_add(1, Ordering::Relaxed);
                    evicted = Some(c);
                }
                None => {
                    refused_count.fetch_add(1, Ordering::Relaxed);
                }
            }
            if peer_full {
                self.warn_at_peer_limit(peer);
            } else {
                self.warn_at_cap(conns.len() + usize::from(evicted.is_some()));
            }
            evicted.as_ref()?;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now();
        let conn = Arc::new(Conn {
            peer,
            limited,
            busy: AtomicUsize::new(0),
            reading_since: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            idle_since: AtomicU64::new(now),
            head_since: AtomicU64::new(now + 1),
            close: Notify::new(),
            gone: Notify::new(),
        });
        conns.insert(id, Arc::clone(&conn));
        if limited {
            *self.by_peer().entry(peer).or_insert(0) += 1;
        }
        Some((id, conn, evicted))
    }

    /// Tells every open connection to close now.
    fn close_all(&self) -> usize {
        let conns = self.conns();
        for c in conns.values() {
            c.close.notify_one();
        }
        conns.len()
    }

    fn by_peer(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.by_peer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes connection `id` (once: an evicted one is already gone when
    /// its task ends), keeping the per-peer count.
    fn take(&self, conns: &mut HashMap<u64, Arc<Conn>>, id: u64) -> Option<Arc<Conn>> {
        let conn = conns.remove(&id)?;
        if conn.limited {
            let mut by_peer = self.by_peer();
            if let Some(n) = by_peer.get_mut(&conn.peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    by_peer.remove(&conn.peer);
                }
            }
        }
        Some(conn)
    }

    fn remove(&self, id: u64) {
        let mut conns = self.conns();
        self.take(&mut conns, id);
    }

    /// Whether a warning throttled by `warned` is due (and claims it).
    fn due(&self, warned: &AtomicU64) -> bool {
        let now = self.now() + 1;
        let last = warned.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        (last == 0 || now.saturating_sub(last) >= every)
            && warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn warn_at_cap(&self, open: usize) {
        if self.due(&self.warned) {
            tracing::warn!(
                cap = self.cap,
                open,
                closed_idle = self.evicted.swap(0, Ordering::Relaxed),
                refused = self.refused.swap(0, Ordering::Relaxed),
                "connection cap reached: closing the connections that waited longest on their client to admit new ones (http.max_connections)"
            );
        }
    }

    fn warn_at_peer_limit(&self, peer: IpAddr) {
        if self.due(&self.warned_peer) {
            tracing::warn!(
                limit = self.per_peer,
                %peer,
                closed_idle = self.evicted_peer.swap(0, Ordering::Relaxed),
                refused = self.refused_peer.swap(0, Ordering::Relaxed),
                "per-peer connection limit reached: closing that peer's connections that waited longest on it (http.max_connections_per_peer)"
            );
        }
    }

    /// How long until `conn` is to be closed: when it has been idle for
    /// the idle timeout, or its headers have been arriving for the header
    /// timeout. `None` while a request is in progress.
    fn close_in(&self, conn: &Conn, limits: &Limits) -> Option<Duration> {
        if conn.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.now();
        let since = |t: u64| Duration::from_millis(now.saturating_sub(t));
        let idle = limits
            .idle_timeout
            .saturating_sub(since(conn.idle_since.load(Ordering::Acquire)));
        let head = match conn.head_since.load(Ordering::Acquire) {
            0 => idle,
            t => limits.header_timeout.saturating_sub(since(t - 1)),
        };
        Some(idle.min(head))
    }
}

impl Conn {
    /// Since when the connection has waited on its client (ms since the
    /// registry's epoch): with no request in progress, since the accept or
    /// the last request's end; with a request whose body is still
    /// arriving slower than [`MIN_BODY_BYTES_PER_SECOND`], since the end
    /// of its headers. `None` while the server is handling a request it has
    /// fully read, or while a body arrives at a real client's pace: such a
    /// connection is never closed to make room, so an attacker who fills
    /// the cap cannot cut off an upload in progress, and one who dribbles
    /// bodies to hold slots is closed first.
    fn waiting_since(&self, now: u64) -> Option<u64> {
        if self.busy.load(Ordering::Acquire) == 0 {
            return Some(self.idle_since.load(Ordering::Acquire));
        }
        let since = match self.reading_since.load(Ordering::Acquire) {
            0 => return None,
            t => t - 1,
        };
        let elapsed = now.saturating_sub(since).max(BODY_RATE_WINDOW_MS);
        let bytes = self.body_bytes.load(Ordering::Acquire);
        let slow = bytes.saturating_mul(1000) < MIN_BODY_BYTES_PER_SECOND.saturating_mul(elapsed);
        slow.then_some(since)
    }
}

/// Marks a request in progress on its connection while it lives.
struct Busy {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Busy {
    /// `reading`: the request has a body still to arrive.
    fn new(conn: Arc<Conn>, registry: Arc<Registry>, reading: bool) -> Busy {
        let since = if reading { registry.now() + 1 } else { 0 };
        conn.reading_since.store(since, Ordering::Release);
        conn.body_bytes.store(0, Ordering::Release);
        conn.busy.fetch_add(1, Ordering::AcqRel);
        conn.head_since.store(0, Ordering::Release);
        Busy { conn, registry }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .idle_since
            .store(self.registry.now(), Ordering::Release);
        self.conn.reading_since.store(0, Ordering::Release);
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets every
/// connection finish its request and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let registry = Arc::new(Registry::new(limits.max_connections, limits.max_per_peer));
    let tracker = TaskTracker::new();
    let (closing_tx, closing) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    #[allow(clippy::disallowed_methods)] // A backoff, not a wait for time to pass.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ip = peer.ip().to_canonical();
        let limited = !limits.unlimited_peers.iter().any(|n| n.contains(&ip));
        let Some((id, conn, evicted)) = registry.admit(crate::net::client_group(ip), limited)
        else {
            drop(stream);
            continue;
        };
        // Wait (briefly) for the evicted socket to close, so that the
        // descriptors open never pass the cap by more than a few.
        if let Some(evicted) = evicted {
            let _closed =
                tokio::time::timeout(Duration::from_millis(100), evicted.gone.notified()).await;
        }
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        tracker.spawn(connection(
            stream,
            peer,
            router.clone(),
            (id, conn),
            Arc::clone(&registry),
            limits.clone(),
            closing.clone(),
        ));
    }
    drop(listener);
    // Ignored: the receivers are in the connection tasks, which may all be
    // gone already.
    let _ = closing_tx.send(true);
    tracker.close();
    if tokio::time::timeout(limits.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        let open = registry.close_all();
        tracing::warn!(
            open,
            timeout_ms = u64::try_from(limits.shutdown_timeout.as_millis()).unwrap_or(u64::MAX),
            "connections still open at the shutdown deadline (http.shutdown_timeout_ms): closing them"
        );
        if tokio::time::timeout(CLOSE_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "connections did not close after being told to; shutting down without them"
            );
        }
    }
}

// The header and idle timeouts are real time that protects the server's
// connections (a resource limit), not business time.
#[allow(clippy::disallowed_methods)]
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    (id, conn): (u64, Arc<Conn>),
    registry: Arc<Registry>,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
) {
    let service = {
        let (conn, registry) = (Arc::clone(&conn), Arc::clone(&registry));
        let body_timeout = limits.body_timeout;
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let reading = !req.body().is_end_stream();
            let busy = Busy::new(Arc::clone(&conn), Arc::clone(&registry), reading);
            // What `into_make_service_with_connect_info` would insert: the
            // audit log and the sign-in rate limits read it.
            req.extensions_mut().insert(ConnectInfo(peer));
            let conn = Arc::clone(&conn);
            let req = req.map(|b| axum::body::Body::new(TimedBody::new(b, body_timeout, conn)));
            let router = router.clone();
            async move {
                let response = router.oneshot(req).await;
                drop(busy);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Ours is in `close_in`; without a timer, hyper has none.
    builder.header_read_timeout(None);
    let io = Watched {
        inner: stream,
        conn: Arc::clone(&conn),
        registry: Arc::clone(&registry),
    };
    // Boxed, not pinned on the stack, so that it can be dropped (closing
    // the socket) before `gone` is signalled.
    let mut served = Box::pin(
        builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades(),
    );
    let mut draining = *closing.borrow();
    if draining {
        served.as_mut().graceful_shutdown();
    }
    loop {
        let close_in = registry.close_in(&conn, &limits);
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                break;
            }
            () = conn.close.notified() => {
                tracing::debug!(%peer, "closed to admit a new connection at the cap");
                break;
            }
            changed = closing.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    served.as_mut().graceful_shutdown();
                }
            }
            // Re-checked at least every header timeout: a request that
            // ends does not wake this loop.
            () = tokio::time::sleep(close_in.unwrap_or(limits.header_timeout)) => {
                if registry.close_in(&conn, &limits) == Some(Duration::ZERO) {
                    tracing::debug!(%peer, "closed after the header or idle timeout");
                    break;
                }
            }
        }
    }
    drop(served);
    registry.remove(id);
    conn.gone.notify_one();
}

/// The connection's socket, noting when the headers of a new request
/// start to arrive.
struct Watched {
    inner: tokio::net::TcpStream,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before
            && this.conn.busy.load(Ordering::Acquire) == 0
            && this.conn.head_since.load(Ordering::Acquire) == 0
        {
            this.conn
                .head_since
                .store(this.registry.now() + 1, Ordering::Release);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that fails once its deadline passes, and that tells its
/// connection when it has all arrived (from then on the connection is the
/// server's to finish, not evictable).
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    conn: Arc<Conn>,
}

impl TimedBody {
    // The body timeout is real time that protects a connection slot.
    #[allow(clippy::disallowed_methods)]
    fn new(inner: Incoming, timeout: Duration, conn: Arc<Conn>) -> TimedBody {
        TimedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            conn,
        }
    }

    fn read(&self) {
        self.conn.reading_since.store(0, Ordering::Release);
    }
}

/// The error a body that took too long reads as.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?} (http.body_timeout_ms)")]
pub struct BodyTimeout(Duration);

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref))
                && let Some(data) = data
            {
                this.conn
                    .body_bytes
                    .fetch_add(data.len() as u64, Ordering::AcqRel);
            }
            // An error ends the request as surely as the end of the body.
            if !matches!(frame, Some(Ok(_))) || this.inner.is_end_stream() {
                this.read();
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout(this.timeout).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "serving_tests.rs"]
mod tests;
