//! The end-to-end harness: start the real `cohort` binary on a free loopback
//! port with a temporary data directory, and talk to it over HTTP. Nothing
//! here reaches into the server's internals; if a test passes, a client
//! would see the same.

#![allow(
    clippy::unwrap_used,
    reason = "test harness: a panic fails the test that called it"
)]
// A process is observed from outside: waiting for it to exit or to finish a
// run polls with real time, since its clock cannot be moved from here.
#![allow(clippy::disallowed_methods)]

pub mod oracle;
pub mod postgres;
mod rng;

pub use rng::Rng;

mod api;
mod browser;
mod fake;
mod oidc;
mod server;

pub use api::*;
pub use browser::*;
pub use fake::*;
pub use oidc::*;
pub use server::*;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A client builder for the tests. The workspace builds reqwest with
/// rustls but no crypto of its own (the server picks *ring*, see
/// `cohort::outbound::install_tls`), so the tests install the same before
/// their first client.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[allow(deprecated)] // No post-quantum key exchange; see the server's.
        let provider = rustls::crypto::ring::default_provider();
        let _ = provider.install_default();
    });
    reqwest::Client::builder()
}

/// A client with reqwest's defaults (see [`http_client_builder`]).
pub fn http_client() -> reqwest::Client {
    http_client_builder().build().unwrap()
}

/// An `equals` condition of a group rule.
pub fn eq(attribute: &str, values: Value) -> Value {
    serde_json::json!({"attribute": attribute, "operator": "equals", "values": values})
}

/// A sorted copy, for comparing id lists.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
