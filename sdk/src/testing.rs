//! Run a plugin's logic natively, with the host replaced by a fake.
//!
//! ```
//! use cohort_sdk::testing::FakeHost;
//! use cohort_sdk::host::{self, Method};
//!
//! let fake = FakeHost::new()
//!     .at_millis(1_700_000_000_000)
//!     .respond("https://api.example.com/v1/people", 200, r#"{"people":[]}"#)
//!     .install();
//! let (body, _): (serde_json::Value, _) =
//!     host::request(Method::Get, "https://api.example.com/v1/people").fetch_json().unwrap();
//! assert_eq!(body["people"], serde_json::json!([]));
//! assert_eq!(fake.requests().len(), 1);
//! ```
//!
//! A request for a URL with no recorded response fails with
//! [`HttpError::HostNotAllowed`], the same error the real host gives for a
//! host missing from the manifest, so tests also cover that path.

use std::cell::RefCell;
use std::rc::Rc;

// The contract's own types, not `crate::host`'s re-export: `host` calls
// into this module in native builds, and this module must not call back.
use crate::bindings::rule_evaluator::cohort::plugin::host::{
    HttpError, Level, Method, Request, Response,
};

/// A log line a plugin wrote during a test.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// Its message.
    pub message: String,
    /// Its structured fields.
    pub fields: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    now_millis: i64,
    responses: Vec<(Option<Method>, String, Result<Response, HttpError>)>,
    requests: Vec<Request>,
    logs: Vec<LogLine>,
}

/// A stand-in for the Cohort host in native unit tests. Build it, record the
/// responses your plugin should see, then [`install`](Self::install) it on the
/// current thread.
#[derive(Default)]
pub struct FakeHost {
    state: State,
}

/// The installed fake. Dropping it uninstalls it. Use it to inspect what the
/// plugin did.
pub struct Installed {
    state: Rc<RefCell<State>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RefCell<State>>>> = const { RefCell::new(None) };
}

impl FakeHost {
    /// A fake with the clock at 0 and no recorded responses.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the wall clock the plugin sees.
    pub fn at_millis(mut self, now_millis: i64) -> Self {
        self.state.now_millis = now_millis;
        self
    }

    /// Answer any request for exactly `url` with `status` and `body`.
    pub fn respond(self, url: &str, status: u16, body: impl Into<Vec<u8>>) -> Self {
        self.respond_with(
            None,
            url,
            Ok(Response {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.into(),
            }),
        )
    }

    /// Answer requests for `url` (optionally only with `method`) with a full
    /// response or an error. Later entries for the same URL win, so a test
    /// can start from a common setup and override one answer.
    pub fn respond_with(
        mut self,
        method: Option<Method>,
        url: &str,
        result: Result<Response, HttpError>,
    ) -> Self {
        self.state.responses.push((method, url.to_owned(), result));
        self
    }

    /// Make this fake the host for the current thread until the returned
    /// handle is dropped.
    pub fn install(self) -> Installed {
        let state = Rc::new(RefCell::new(self.state));
        CURRENT.with(|c| *c.borrow_mut() = Some(state.clone()));
        Installed { state }
    }
}

impl Installed {
    /// Every request the plugin sent, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.borrow().requests.clone()
    }

    /// Every line the plugin logged, in order.
    pub fn logs(&self) -> Vec<LogLine> {
        self.state.borrow().logs.clone()
    }

    /// Move the clock.
    pub fn set_now_millis(&self, now_millis: i64) {
        self.state.borrow_mut().now_millis = now_millis;
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

/// What the host-facing functions call in a native build.
pub(crate) struct FakeCalls<'a>(&'a mut State);

impl FakeCalls<'_> {
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn record_log(&mut self, level: Level, message: &str, fields: &[(String, String)]) {
        self.0.logs.push(LogLine {
            level,
            message: message.to_owned(),
            fields: fields.to_vec(),
        });
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn now_millis(&mut self) -> i64 {
        self.0.now_millis
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn send_http(&mut self, request: &Request) -> Result<Response, HttpError> {
        self.0.requests.push(request.clone());
        self.0
            .responses
            .iter()
            .rev()
            .find(|(method, url, _)| {
                *url == request.url && method.as_ref().is_none_or(|m| *m == request.method)
            })
            .map(|(_, _, result)| result.clone())
            .unwrap_or_else(|| {
                Err(HttpError::HostNotAllowed(format!(
                    "no fake response for {}",
                    request.url
                )))
            })
    }
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn with_fake<T>(f: impl FnOnce(&mut FakeCalls<'_>) -> T) -> T {
    CURRENT.with(|c| {
        let current = c.borrow();
        let state = current.as_ref().expect(
            "a Cohort host function was called natively with no FakeHost installed; \
             call cohort_sdk::testing::FakeHost::new().install() at the start of the test",
        );
        let mut state = state.borrow_mut();
        f(&mut FakeCalls(&mut state))
    })
}
