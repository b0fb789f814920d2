//! A real OpenID Provider (npm `oidc-provider`) for sign-in tests.

#![allow(
    clippy::unwrap_used,
    reason = "test harness: a panic fails the test that called it"
)]
// A process is observed from outside: waiting for it polls with real time.
#![allow(clippy::disallowed_methods)]

use super::*;

/// A real OpenID Provider: npm `oidc-provider` (installed into `tests/npm`
/// by `npm ci --prefix tests/npm`) on a free loopback port, started by
/// `tests/npm/oidc-provider.mjs` and stopped when dropped.
pub struct OidcProvider {
    child: Child,
    /// Its issuer URL, `http://127.0.0.1:<port>`.
    pub issuer: String,
}

impl OidcProvider {
    /// Starts a provider with `settings`: `{"clients": [...], "accounts":
    /// {"<login>": {<claims>}}}` (see the script).
    pub fn start(settings: &Value) -> OidcProvider {
        Self::start_script("oidc-provider.mjs", settings)
    }

    /// Starts the provider the tests control (`tests/npm/fake-op.mjs`),
    /// which issues the bad ID tokens a real provider never does.
    pub fn start_fake(client_id: &str, client_secret: &str) -> OidcProvider {
        Self::start_script(
            "fake-op.mjs",
            &serde_json::json!({"client_id": client_id, "client_secret": client_secret}),
        )
    }

    /// Sets the fake provider's mode (see `fake-op.mjs`) and, when given,
    /// the keys it publishes.
    pub async fn control(&self, mode: &str, publish: Option<&[&str]>) {
        let mut body = serde_json::json!({"mode": mode});
        if let Some(p) = publish {
            body["publish"] = serde_json::json!(p);
        }
        let r = crate::http_client()
            .post(format!("{}/control", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("fake provider reachable");
        assert!(r.status().is_success());
    }

    fn start_script(script: &str, settings: &Value) -> OidcProvider {
        let npm = Path::new(env!("CARGO_MANIFEST_DIR")).join("npm");
        assert!(
            npm.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run `npm ci --prefix tests/npm` (the README's test command does)"
        );
        let mut child = Command::new("node")
            .arg(script)
            .arg(settings.to_string())
            .current_dir(&npm)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting node (needed for the OpenID Provider)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("listening ") {
                    let _ = tx.send(issuer.to_string());
                }
            }
        });
        let issuer = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the OpenID Provider did not start within 20 s");
        OidcProvider { child, issuer }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
