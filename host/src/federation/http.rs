//! The `openidconnect` crate's HTTP, sent through the server's own reqwest
//! client, so federation adds no second HTTP stack and follows the same TLS
//! settings (the system trust store).

use openidconnect::{HttpRequest, HttpResponse};

/// Why a request to a provider failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Could not connect, timed out, or the body could not be read.
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    /// The request or response could not be converted.
    #[error("{0}")]
    Convert(#[from] openidconnect::http::Error),
}

/// Sends `request` with `client`. Redirects are not followed: a provider's
/// endpoints answer directly.
pub async fn send(
    client: &reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut out = openidconnect::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        out = out.header(name, value);
    }
    let bytes = response.bytes().await?;
    Ok(out.body(bytes.to_vec())?)
}
