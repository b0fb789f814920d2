//! Fakes of other servers' HTTP APIs (import sources) on loopback.

#![allow(
    clippy::unwrap_used,
    reason = "test harness: a panic fails the test that called it"
)]
// A process is observed from outside: waiting for it polls with real time.
#![allow(clippy::disallowed_methods)]

use super::*;

/// A request a [`Fake`] got.
#[derive(Clone, Debug)]
pub struct FakeRequest {
    /// The request line, e.g. `GET /people?page=2 HTTP/1.1`.
    pub line: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl FakeRequest {
    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Line, headers and body as one text, for assertions.
    pub fn text(&self) -> String {
        let mut out = format!("{}\r\n", self.line);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&self.body);
        out
    }
}

/// What a [`Fake`] answers.
pub struct FakeReply {
    status: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl FakeReply {
    /// `200` with a JSON body.
    pub fn json(value: &Value) -> FakeReply {
        FakeReply::json_text(value.to_string())
    }

    /// `200` with a body that is JSON already.
    pub fn json_text(body: String) -> FakeReply {
        FakeReply {
            status: "200 OK".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }

    /// `status` (e.g. `429 Too Many Requests`) with `Retry-After: 1`.
    pub fn busy(status: &str) -> FakeReply {
        FakeReply::status(status).header("retry-after", "1")
    }

    /// `status` with no body.
    pub fn status(status: &str) -> FakeReply {
        FakeReply {
            status: status.into(),
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// With another header.
    pub fn header(mut self, name: &str, value: &str) -> FakeReply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A fake of a source's HTTP API on a free loopback port: each request
/// (one per connection) is answered by `handler` and logged.
pub struct Fake {
    /// Its port.
    pub port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<FakeRequest>>>,
}

impl Fake {
    /// Starts serving; `handler` gets the fake's port (for links) and the
    /// request.
    pub fn start(mut handler: impl FnMut(u16, &FakeRequest) -> FakeReply + Send + 'static) -> Fake {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let log: std::sync::Arc<std::sync::Mutex<Vec<FakeRequest>>> = Default::default();
        let seen = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let mut reader = BufReader::new(clone);
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let length = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let request = FakeRequest {
                    line: line.trim().to_string(),
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let reply = handler(port, &request);
                if let Ok(mut log) = seen.lock() {
                    log.push(request);
                }
                let mut head = format!("HTTP/1.1 {}\r\n", reply.status);
                for (k, v) in &reply.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                let _ = write!(
                    stream,
                    "{head}content-length: {}\r\nconnection: close\r\n\r\n{}",
                    reply.body.len(),
                    reply.body
                );
            }
        });
        Fake { port, log }
    }

    /// The requests so far, in order.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
