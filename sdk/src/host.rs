//! The plugin's only ways out of the sandbox: logging, the clock and HTTP.
//!
//! In a WebAssembly build these call the host. In a native build (unit tests)
//! they call the [`FakeHost`](crate::testing::FakeHost) installed on the
//! current thread, and panic with a hint when none is installed.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::bindings::rule_evaluator::cohort::plugin::host::{
    HttpError, Level, Method, Request, Response,
};

/// Log a line at `level` with structured `fields`.
///
/// The host caps the bytes one call may log; past the cap lines are dropped
/// and counted, so logging can never fail a call.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    imp::log(level, message, &fields);
}

/// Log at `info`.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields);
}

/// Log at `warn`.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warn, message, fields);
}

/// Log at `debug`.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields);
}

/// Wall-clock time in milliseconds since the Unix epoch (UTC).
pub fn now_millis() -> i64 {
    imp::now_millis()
}

/// Send one HTTP request. Only hosts listed in the plugin manifest's
/// `allowed_hosts` are reachable; anything else is
/// [`HttpError::HostNotAllowed`].
pub fn send(request: &Request) -> Result<Response, HttpError> {
    imp::send_http(request)
}

/// A failure of a JSON-over-HTTP helper: either no response at all, a
/// non-2xx status, or a body that is not the expected JSON.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request produced no response.
    #[error("http request failed: {0:?}")]
    Http(HttpError),
    /// The source answered 429 or 503 with a `Retry-After` in seconds
    /// (defaults to 30 when absent or unreadable).
    #[error("rate limited; retry after {0} s")]
    RateLimited(u32),
    /// The source refused the credentials (401 or 403).
    #[error("unauthorized (status {0})")]
    Unauthorized(u16),
    /// Any other non-2xx status, with the start of the body for context.
    #[error("unexpected status {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// Up to 200 bytes of the body, lossily decoded.
        body: String,
    },
    /// The body was not the JSON the plugin expected.
    #[error("unreadable response: {0}")]
    Decode(String),
}

/// Build a request. `url` must be absolute.
pub fn request(method: Method, url: impl Into<String>) -> Request {
    Request {
        method,
        url: url.into(),
        headers: Vec::new(),
        body: Vec::new(),
        timeout_ms: None,
    }
}

impl Request {
    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Add `Authorization: Basic` with `user` and `password` (BambooHR's
    /// API key as user, HiBob's service users).
    pub fn basic(self, user: &str, password: &str) -> Self {
        let value = format!(
            "Basic {}",
            crate::encoding::base64(format!("{user}:{password}").as_bytes())
        );
        self.header("authorization", value)
    }

    /// Add `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    /// Set a form body (`application/x-www-form-urlencoded`), as OAuth
    /// token endpoints take.
    pub fn form(mut self, pairs: &[(&str, &str)]) -> Self {
        self.body = crate::encoding::form_urlencoded(pairs).into_bytes();
        self.header("content-type", "application/x-www-form-urlencoded")
    }

    /// Set a JSON body and its content type.
    pub fn json<T: Serialize>(mut self, body: &T) -> Result<Self, FetchError> {
        self.body = serde_json::to_vec(body).map_err(|e| FetchError::Decode(e.to_string()))?;
        Ok(self.header("content-type", "application/json"))
    }

    /// Send it and decode a 2xx JSON body, mapping 401/403, 429/503 and other
    /// statuses to [`FetchError`] variants importers and connectors can
    /// return as-is.
    pub fn fetch_json<T: DeserializeOwned>(self) -> Result<(T, Response), FetchError> {
        let request = self.header("accept", "application/json");
        let response = send(&request).map_err(FetchError::Http)?;
        check_status(&response)?;
        let value = serde_json::from_slice(&response.body)
            .map_err(|e| FetchError::Decode(e.to_string()))?;
        Ok((value, response))
    }
}

impl Request {
    /// Send it and return a 2xx body as text (CSV exports and the like),
    /// with the same status mapping as [`Request::fetch_json`].
    pub fn fetch_text(self) -> Result<(String, Response), FetchError> {
        let response = send(&self).map_err(FetchError::Http)?;
        check_status(&response)?;
        let text = String::from_utf8(response.body.clone())
            .map_err(|e| FetchError::Decode(format!("the body is not UTF-8: {e}")))?;
        Ok((text, response))
    }
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `rel="next"` target of an RFC 8288 `Link` header, the pagination
    /// style Okta, GitHub and many HR APIs use.
    pub fn next_link(&self) -> Option<String> {
        let link = self.header("link")?;
        link.split(',').find_map(|part| {
            let (target, params) = part.split_once(';')?;
            let is_next = params
                .split(';')
                .any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\"") || p.trim() == "rel=next");
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            is_next.then(|| target.to_owned())
        })
    }
}

fn check_status(response: &Response) -> Result<(), FetchError> {
    match response.status {
        200..=299 => Ok(()),
        401 | 403 => Err(FetchError::Unauthorized(response.status)),
        429 | 503 => Err(FetchError::RateLimited(
            response
                .header("retry-after")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(30),
        )),
        status => {
            let end = response.body.len().min(200);
            Err(FetchError::Status {
                status,
                body: String::from_utf8_lossy(&response.body[..end]).into_owned(),
            })
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{HttpError, Level, Request, Response};
    use crate::bindings::rule_evaluator::cohort::plugin::host;

    pub(super) fn log(level: Level, message: &str, fields: &[(String, String)]) {
        host::log(level, message, fields);
    }
    pub(super) fn now_millis() -> i64 {
        host::now_millis()
    }
    pub(super) fn send_http(request: &Request) -> Result<Response, HttpError> {
        host::send_http(request)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{HttpError, Level, Request, Response};
    use crate::testing::with_fake;

    pub(super) fn log(level: Level, message: &str, fields: &[(String, String)]) {
        with_fake(|f| f.record_log(level, message, fields));
    }
    pub(super) fn now_millis() -> i64 {
        with_fake(|f| f.now_millis())
    }
    pub(super) fn send_http(request: &Request) -> Result<Response, HttpError> {
        with_fake(|f| f.send_http(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request builders put the encodings where the wire wants them:
    /// the Basic credentials base64'd as `user:password`, the form body
    /// percent-encoded with its content type.
    #[test]
    fn basic_and_form_encode_for_the_wire() {
        let r = request(Method::Post, "https://example.test/token")
            .basic("key", "x")
            .form(&[("grant_type", "client_credentials"), ("scope", "a b")]);
        assert_eq!(
            r.headers,
            [
                ("authorization".to_owned(), "Basic a2V5Ong=".to_owned()),
                (
                    "content-type".to_owned(),
                    "application/x-www-form-urlencoded".to_owned()
                ),
            ]
        );
        assert_eq!(r.body, b"grant_type=client_credentials&scope=a%20b");
    }
}
