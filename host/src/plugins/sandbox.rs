//! The store data of one plugin instance, and the host imports it serves:
//! logging, the clock and outbound HTTP. This is the whole surface a plugin
//! can reach; WASI is linked for components from other languages, with no
//! directories, no environment, no arguments and no network.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::host::{self as wit, HttpError, Level, Method, Request, Response};
use super::limits::Limits;
use super::manifest::Manifest;

/// What one instance of a plugin may do, and what it has used so far.
pub struct Sandbox {
    pub(crate) plugin: Arc<Manifest>,
    pub(crate) limits: Arc<Limits>,
    /// Built on first use: only components that import WASI (other
    /// languages) need one, and building it seeds random generators, which
    /// would otherwise dominate the cost of instantiating a Rust plugin.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    /// Per-call accounting, reset at the start of every call.
    pub(crate) call: CallAccount,
    /// Set when the guest asked for more memory than allowed, so the trap
    /// that follows is reported as a memory limit rather than a crash.
    pub(crate) memory_refused: bool,
    /// Bytes of linear memory across all of the instance's memories:
    /// components from other languages have several, and the cap is per
    /// instance, not per memory.
    memory_total: usize,
}

/// Stands between plugins and the network for `cohort plugin test`, which
/// runs a component against recorded HTTP exchanges, or records them. The
/// manifest's `allowed_hosts` are checked before it is asked, as for the
/// network, so a test also proves the manifest lets the plugin reach its
/// source.
pub trait HttpTap: Send + Sync + std::fmt::Debug {
    /// The answer to `request`, or `None` to send it to the network.
    fn answer(&self, request: &Request) -> Option<Result<Response, HttpError>>;
    /// Sees each request the network answered, with that answer.
    fn observe(&self, request: &Request, response: &Response);
}

/// What a log line costs against the per-call log limit beyond its text.
const LINE_COST: usize = 64;

/// One line a plugin logged during a call.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The message.
    pub message: String,
    /// The structured fields the plugin attached.
    pub fields: std::collections::BTreeMap<String, String>,
}

/// What the current call has used.
pub(crate) struct CallAccount {
    pub(crate) name: &'static str,
    pub(crate) started: crate::clock::Stopwatch,
    /// Time spent inside host calls (HTTP), which does not count as CPU.
    pub(crate) host_wait: Duration,
    pub(crate) log_bytes: usize,
    pub(crate) logs_dropped: u32,
    /// The call's own log lines, within the same byte limit, kept only when
    /// `keep_lines` (a caller that shows them to the plugin's author: an
    /// instance's preview).
    pub(crate) lines: Vec<LogLine>,
    pub(crate) keep_lines: bool,
    pub(crate) cpu_exceeded: bool,
    pub(crate) wall_exceeded: bool,
}

impl CallAccount {
    pub(crate) fn new(name: &'static str) -> Self {
        CallAccount {
            name,
            started: crate::clock::Stopwatch::start(),
            host_wait: Duration::ZERO,
            log_bytes: 0,
            logs_dropped: 0,
            lines: Vec::new(),
            keep_lines: false,
            cpu_exceeded: false,
            wall_exceeded: false,
        }
    }

    /// Guest execution time so far: wall time minus host waits.
    pub(crate) fn cpu_used(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.host_wait)
    }
}

impl Sandbox {
    pub(crate) fn new(plugin: Arc<Manifest>, limits: Arc<Limits>) -> Self {
        Sandbox {
            plugin,
            limits,
            wasi: None,
            table: ResourceTable::new(),
            call: CallAccount::new("instantiate"),
            memory_refused: false,
            memory_total: 0,
        }
    }

    fn send(&mut self, request: Request) -> Result<Response, HttpError> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| HttpError::InvalidUrl(format!("{}: {e}", request.url)))?;
        let default_port = match url.scheme() {
            "http" => 80,
            "https" => 443,
            other => {
                return Err(HttpError::InvalidUrl(format!(
                    "scheme \"{other}\" is not http or https"
                )));
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| HttpError::InvalidUrl(format!("{} has no host", request.url)))?
            .to_ascii_lowercase();
        let port = url.port().unwrap_or(default_port);
        if !self.plugin.allows(&host, port, default_port) {
            let target = if port == default_port {
                host
            } else {
                format!("{host}:{port}")
            };
            tracing::warn!(
                plugin = %self.plugin.name,
                call = self.call.name,
                host = %target,
                "refused outbound request to a host not in the plugin manifest"
            );
            return Err(HttpError::HostNotAllowed(target));
        }
        let tap = self.limits.http_tap.clone();
        if let Some(answer) = tap.as_ref().and_then(|t| t.answer(&request)) {
            // A replayed answer meets the same size limit as the network's,
            // so a test passes only where a server would.
            let cap = self.limits.http_response_bytes;
            return match answer {
                Ok(r) if r.body.len() > cap => Err(HttpError::ResponseTooLarge(cap as u64)),
                other => other,
            };
        }
        let seen = tap.as_ref().map(|_| request.clone());
        if let Err(refused) = self.limits.outbound.policy().check_url(&url) {
            tracing::warn!(plugin = %self.plugin.name, call = self.call.name,
                host = %refused.host, address = %refused.addr, kind = refused.kind,
                "outbound request refused: an internal address");
            return Err(HttpError::HostNotAllowed(host_label(&url)));
        }
        let remaining_wall = self.limits.wall.saturating_sub(self.call.started.elapsed());
        let mut timeout = self.limits.http_timeout.min(remaining_wall);
        if let Some(ms) = request.timeout_ms {
            timeout = timeout.min(Duration::from_millis(ms.into()));
        }
        if timeout.is_zero() {
            return Err(HttpError::Timeout);
        }
        let method = match &request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
            Method::Head => reqwest::Method::HEAD,
            Method::Other(m) => reqwest::Method::from_bytes(m.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("invalid method {m:?}")))?,
        };
        let client = self.limits.outbound.blocking_client().map_err(|e| {
            tracing::error!(error = %e, "the plugins' HTTP client could not be built");
            HttpError::Other("the host's HTTP client is unavailable".into())
        })?;
        let target = host_label(&url);
        let mut builder = client
            .request(method, url)
            .timeout(timeout)
            .body(request.body);
        for (name, value) in &request.headers {
            if name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length") {
                continue;
            }
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("invalid header name {name:?}")))?;
            let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                HttpError::InvalidRequest(format!("invalid value for header {name}"))
            })?;
            builder = builder.header(name, value);
        }
        let response = builder.send().map_err(|e| {
            if e.is_timeout() {
                return HttpError::Timeout;
            }
            // The cause goes to the log only: a plugin's errors reach import
            // runs and API callers, and "connection refused" against "timed
            // out" would make the sandbox a port scanner.
            match crate::outbound::OutboundError::from_reqwest(&e, "plugin") {
                crate::outbound::OutboundError::AddressNotAllowed => {
                    HttpError::HostNotAllowed(target.clone())
                }
                // Not made by a transport error; read as unreachable.
                crate::outbound::OutboundError::Unreachable
                | crate::outbound::OutboundError::TooLarge => HttpError::Connection(format!(
                    "{target} could not be reached; the server log has the cause"
                )),
            }
        })?;
        let cap = self.limits.http_response_bytes;
        if let Some(len) = response.content_length()
            && len as usize > cap
        {
            return Err(HttpError::ResponseTooLarge(cap as u64));
        }
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        response
            .take(cap as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                if e.to_string().contains("timed out") {
                    HttpError::Timeout
                } else {
                    HttpError::Connection(e.to_string())
                }
            })?;
        if body.len() > cap {
            return Err(HttpError::ResponseTooLarge(cap as u64));
        }
        let response = Response {
            status,
            headers,
            body,
        };
        if let (Some(tap), Some(request)) = (tap, seen) {
            tap.observe(&request, &response);
        }
        Ok(response)
    }
}

/// `host` or `host:port`, as plugins name targets.
fn host_label(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

impl wit::Host for Sandbox {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        // A line costs at least LINE_COST, so that empty lines cannot
        // flood the log (and the lines kept for a preview) for free.
        let size = LINE_COST
            + message.len()
            + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if self.call.log_bytes + size > self.limits.log_bytes {
            self.call.logs_dropped += 1;
            return;
        }
        self.call.log_bytes += size;
        let fields: std::collections::BTreeMap<String, String> = fields.into_iter().collect();
        if self.call.keep_lines {
            self.call.lines.push(LogLine {
                level: match level {
                    Level::Trace => "trace",
                    Level::Debug => "debug",
                    Level::Info => "info",
                    Level::Warn => "warn",
                    Level::Error => "error",
                },
                message: message.clone(),
                fields: fields.clone(),
            });
        }
        let fields = serde_json::to_string(&fields).unwrap_or_default();
        let plugin = self.plugin.name.as_str();
        let call = self.call.name;
        match level {
            Level::Trace => tracing::trace!(plugin, call, fields, "{message}"),
            Level::Debug => tracing::debug!(plugin, call, fields, "{message}"),
            Level::Info => tracing::info!(plugin, call, fields, "{message}"),
            Level::Warn => tracing::warn!(plugin, call, fields, "{message}"),
            Level::Error => tracing::error!(plugin, call, fields, "{message}"),
        }
    }

    fn now_millis(&mut self) -> i64 {
        self.limits.clock.now().timestamp_millis()
    }

    fn send_http(&mut self, request: Request) -> Result<Response, HttpError> {
        let started = crate::clock::Stopwatch::start();
        let result = self.send(request);
        self.call.host_wait += started.elapsed();
        result
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Deny by default: no preopened directories, no environment, no
        // arguments, no sockets, no name lookup; stdio goes nowhere. Clocks
        // and random stay, because language runtimes need them to start.
        let ctx = self.wasi.get_or_insert_with(|| {
            WasiCtxBuilder::new()
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build()
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for Sandbox {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory_total + desired.saturating_sub(current);
        if total > self.limits.memory_bytes {
            self.memory_refused = true;
            return Ok(false);
        }
        self.memory_total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
