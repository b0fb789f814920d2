//! Every HTTP request Cohort makes on its own or on a plugin's behalf goes
//! through here, so that nobody who can configure an identity provider or a
//! plugin instance can make the server reach inside its own network: the
//! loopback interface, the cloud metadata service, private ranges.
//!
//! Names are resolved first and only checked addresses are handed to the
//! connector (a [`reqwest::dns::Resolve`] that filters), so a name cannot be
//! re-resolved to something else between the check and the connection. The
//! connector skips the resolver for IP literals, so URLs with an address for
//! a host are checked before they are sent. Redirects are never followed by
//! these clients, so every hop is a URL that passed through here.
//!
//! Exceptions come only from `[outbound] allow_private`, shared by the
//! server's client and the plugin sandbox.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ipnet::IpNet;

/// One `allow_private` entry: a CIDR block or address, or a host name whose
/// every address is allowed (an internal identity provider).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// Addresses in this block.
    Net(IpNet),
    /// A host name, lowercase, compared exactly.
    Host(String),
}

impl std::str::FromStr for Allowed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Allowed::Net(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Allowed::Net(IpNet::from(ip)));
        }
        let host = s.trim_end_matches('.').to_ascii_lowercase();
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if valid {
            Ok(Allowed::Host(host))
        } else {
            Err(format!(
                "{s:?} is not a CIDR block (10.0.0.0/8), an IP address or a host name"
            ))
        }
    }
}

/// Which internal addresses may be reached anyway.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    allowed: Vec<Allowed>,
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves to {addr}, a {kind} address, which outbound requests may not reach")]
pub struct Refused {
    /// The host as the URL named it.
    pub host: String,
    /// The address refused.
    pub addr: IpAddr,
    /// `loopback`, `private`, `link-local`, ...
    pub kind: &'static str,
}

impl Policy {
    /// A policy that also allows `allowed`.
    pub fn new(allowed: Vec<Allowed>) -> Policy {
        Policy { allowed }
    }

    /// Whether `addr`, reached as `host`, may be connected to.
    pub fn check(&self, host: &str, addr: IpAddr) -> Result<(), Refused> {
        let Some(kind) = internal(addr) else {
            return Ok(());
        };
        let host_lc = host.trim_end_matches('.').to_ascii_lowercase();
        let allowed = self.allowed.iter().any(|a| match a {
            Allowed::Net(net) => {
                net.contains(&addr)
                    || mapped_v4(addr).is_some_and(|v4| net.contains(&IpAddr::V4(v4)))
            }
            Allowed::Host(h) => *h == host_lc,
        });
        if allowed {
            Ok(())
        } else {
            Err(Refused {
                host: host.to_string(),
                addr,
                kind,
            })
        }
    }

    /// Checks a URL whose host is an IP literal (the connector does not
    /// resolve those, so [`FilteringResolver`] never sees them). Names pass:
    /// the resolver checks them.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        let host = url.host_str().unwrap_or_default();
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(addr) => self.check(host, addr),
            Err(_) => Ok(()),
        }
    }
}

/// The embedded IPv4 address of IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4
/// (`2002::/16`) IPv6 addresses: each reaches that IPv4 address.
fn mapped_v4(addr: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = addr else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let o = v6.octets();
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// The kind of internal address `addr` is, or `None` for an address on the
/// public internet.
pub fn internal(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match mapped_v4(addr) {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [0, ..] => "unspecified",
        [127, ..] => "loopback",
        [10, ..] | [192, 168, ..] => "private",
        [172, b, ..] if (16..32).contains(&b) => "private",
        // Link-local, where the cloud metadata service lives (169.254.169.254).
        [169, 254, ..] => "link-local",
        // Carrier-grade NAT; also Alibaba Cloud's metadata (100.100.100.200).
        [100, b, ..] if (64..128).contains(&b) => "shared (CGNAT)",
        // IETF protocol assignments; Oracle Cloud's metadata is 192.0.0.192.
        [192, 0, 0, _] => "reserved",
        // Benchmarking networks, often used inside data centres.
        [198, 18 | 19, ..] => "reserved",
        [224..=239, ..] => "multicast",
        [240..=255, ..] => "reserved or broadcast",
        _ => return None,
    })
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if s[0] & 0xfe00 == 0xfc00 {
        // Unique-local; AWS's IPv6 metadata service is fd00:ec2::254.
        "unique-local"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if s[0] & 0xffc0 == 0xfec0 {
        "site-local"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast"
    } else {
        return None;
    })
}

/// A resolver that drops the addresses the policy refuses, and fails when
/// none is left, so the connector only ever sees checked addresses.
#[derive(Debug)]
struct FilteringResolver {
    policy: Arc<Policy>,
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let kept: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| match policy.check(&host, a.ip()) {
                    Ok(()) => true,
                    Err(r) => {
                        refused.get_or_insert(r);
                        false
                    }
                })
                .collect();
            match (kept.is_empty(), refused) {
                (true, Some(r)) => Err(Box::new(r) as Box<dyn std::error::Error + Send + Sync>),
                (_, r) => {
                    if let Some(r) = r {
                        tracing::warn!(host = %r.host, address = %r.addr, kind = r.kind,
                            "outbound: dropped an internal address among a name's addresses");
                    }
                    Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
                }
            }
        })
    }
}

/// Why an outbound request failed, as callers see it: a stable code and no
/// transport detail (which would make the server a port scanner). The detail
/// goes to the log where the error is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The URL names, or resolves to, an internal address.
    #[error("the address is not allowed for outbound requests")]
    AddressNotAllowed,
    /// No answer: refused, timed out, name not found, TLS failed.
    #[error("the upstream server could not be reached")]
    Unreachable,
    /// The answer was larger than the server reads from an upstream.
    #[error("the upstream server's answer is too large")]
    TooLarge,
}

impl OutboundError {
    /// The stable code API errors carry.
    pub fn code(self) -> &'static str {
        match self {
            OutboundError::AddressNotAllowed => "address_not_allowed",
            OutboundError::Unreachable => "upstream_unreachable",
            OutboundError::TooLarge => "upstream_too_large",
        }
    }

    /// Classifies a transport error and logs its detail.
    pub fn from_reqwest(e: &reqwest::Error, purpose: &'static str) -> OutboundError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        let mut detail = String::new();
        let mut refused = false;
        while let Some(s) = source {
            refused |= s.downcast_ref::<Refused>().is_some();
            let text = s.to_string();
            if !detail.contains(&text) {
                if !detail.is_empty() {
                    detail.push_str(": ");
                }
                detail.push_str(&text);
            }
            source = s.source();
        }
        let url = e
            .url()
            .map(|u| redact_url(u.as_str()).unwrap_or_else(|| u.to_string()))
            .unwrap_or_default();
        if refused {
            tracing::warn!(purpose, url, error = %detail, "outbound request refused");
            OutboundError::AddressNotAllowed
        } else {
            tracing::warn!(purpose, url, error = %detail, "outbound request failed");
            OutboundError::Unreachable
        }
    }

    /// Logs a refusal of a literal address.
    pub fn refused(r: &Refused, purpose: &'static str) -> OutboundError {
        tracing::warn!(purpose, host = %r.host, address = %r.addr, kind = r.kind,
            "outbound request refused");
        OutboundError::AddressNotAllowed
    }
}

/// What replaces a hidden part of a URL.
pub(crate) const HIDDEN: &str = "[redacted]";

/// `url` with its query values, fragment and any user information replaced
/// by `[redacted]` (parameter names stay, so the admin sees which are set),
/// or `None` when there is nothing to hide. Used for logs and for plugin
/// configuration shown through the API.
pub(crate) fn redact_url(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let userinfo = !parsed.username().is_empty() || parsed.password().is_some();
    if parsed.query().is_none() && parsed.fragment().is_none() && !userinfo {
        return None;
    }
    let mut out = format!("{}://", parsed.scheme());
    if userinfo {
        out.push_str(HIDDEN);
        out.push('@');
    }
    out.push_str(parsed.host_str().unwrap_or_default());
    if let Some(port) = parsed.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(parsed.path());
    if let Some(query) = parsed.query() {
        let names: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}={HIDDEN}"),
                None => HIDDEN.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&names.join("&"));
    }
    if parsed.fragment().is_some() {
        out.push('#');
        out.push_str(HIDDEN);
    }
    Some(out)
}

/// An HTTP client that could not be built (no TLS roots, say). Shared, since
/// the plugins' client is built once and its failure answered to every
/// caller after.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(Arc<reqwest::Error>);

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        ClientError(Arc::new(e))
    }
}

/// The server's outbound HTTP: the policy, an async client for the server's
/// own requests and a blocking one for plugins, both filtering addresses.
pub struct Outbound {
    policy: Arc<Policy>,
    blocking: OnceLock<Result<reqwest::blocking::Client, ClientError>>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("policy", &self.policy)
            .finish()
    }
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound::new(Policy::default())
    }
}

/// Makes rustls with *ring* the process's TLS crypto, before any client
/// is built (reqwest is built without a provider of its own). Safe to call
/// more than once.
pub fn install_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is installed already, which is as good.
        // Deprecated because *ring* has no post-quantum key exchange; the
        // alternative, aws-lc, needs cmake and more C to build. Upstream
        // identity and HR APIs negotiate classic ECDHE either way.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let _ = provider.install_default();
    });
}

impl Outbound {
    /// Outbound HTTP under `policy`.
    pub fn new(policy: Policy) -> Outbound {
        install_tls();
        Outbound {
            policy: Arc::new(policy),
            blocking: OnceLock::new(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// An async client that never follows redirects, ignores proxy
    /// variables (a proxy would resolve names where they cannot be checked)
    /// and connects only to checked addresses.
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client, ClientError> {
        reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(FilteringResolver {
                policy: Arc::clone(&self.policy),
            }))
            .build()
            .map_err(ClientError::from)
    }

    /// The plugins' blocking client, built on first use: reqwest's blocking
    /// client must not be created (or dropped) on an async worker thread.
    pub fn blocking_client(&self) -> Result<&reqwest::blocking::Client, ClientError> {
        self.blocking
            .get_or_init(|| {
                reqwest::blocking::Client::builder()
                    // A redirect to another host would bypass the allow-list
                    // and this policy, so plugins see 3xx responses and follow
                    // them themselves, through here again.
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .dns_resolver(Arc::new(FilteringResolver {
                        policy: Arc::clone(&self.policy),
                    }))
                    .build()
                    .map_err(ClientError::from)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Sends `request` (built by a client of this module) after checking a
    /// literal address in its URL.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
        purpose: &'static str,
    ) -> Result<reqwest::Response, OutboundError> {
        let (client, request) = request.build_split();
        let request = request.map_err(|e| OutboundError::from_reqwest(&e, purpose))?;
        self.policy
            .check_url(request.url())
            .map_err(|r| OutboundError::refused(&r, purpose))?;
        client
            .execute(request)
            .await
            .map_err(|e| OutboundError::from_reqwest(&e, purpose))
    }

    /// Reads an answer's body, refusing one larger than `limit` bytes
    /// without holding more than that: an upstream (a hostile or broken
    /// identity provider) must not be able to make the server allocate
    /// whatever it sends.
    pub async fn body(
        mut response: reqwest::Response,
        limit: usize,
        purpose: &'static str,
    ) -> Result<Vec<u8>, OutboundError> {
        let too_large = |len: u64| {
            tracing::warn!(purpose, limit, length = len, "outbound answer too large");
            OutboundError::TooLarge
        };
        if let Some(len) = response.content_length()
            && len > limit as u64
        {
            return Err(too_large(len));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| OutboundError::from_reqwest(&e, purpose))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_large((body.len() + chunk.len()) as u64));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The most the server reads of an identity provider's answer (discovery
/// document, key set, token response). Real ones are a few KiB; 1 MiB
/// leaves room for providers with many keys.
pub const MAX_IDP_RESPONSE_BYTES: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        let p = Policy::default();
        for (a, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.100.100.200", "shared (CGNAT)"),
            ("192.0.0.192", "reserved"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved or broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fc00::1", "unique-local"),
            ("fd00:ec2::254", "unique-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
        ] {
            let err = p.check("h", ip(a)).unwrap_err();
            assert_eq!(err.kind, kind, "{a}");
        }
        for a in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "1.1.1.1",
            "2606:4700::1111",
        ] {
            assert!(p.check("h", ip(a)).is_ok(), "{a}");
        }
    }

    #[test]
    fn exceptions_are_blocks_or_names() {
        let p = Policy::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
            "IdP.Internal.Example.".parse().unwrap(),
        ]);
        assert!(p.check("x", ip("127.0.0.1")).is_ok());
        assert!(p.check("x", ip("::ffff:127.0.0.1")).is_ok());
        assert!(p.check("x", ip("127.0.0.2")).is_err());
        assert!(p.check("x", ip("10.9.9.9")).is_ok());
        assert!(p.check("idp.internal.example", ip("192.168.0.5")).is_ok());
        assert!(p.check("other.example", ip("192.168.0.5")).is_err());
        assert!("not a host!".parse::<Allowed>().is_err());
        assert!("10.0.0.0/33".parse::<Allowed>().is_err());
    }

    #[test]
    fn literal_urls_are_checked_and_names_left_to_the_resolver() {
        let p = Policy::default();
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(p.check_url(&url("http://127.0.0.1:22/")).is_err());
        assert!(p.check_url(&url("http://[::1]/")).is_err());
        assert!(p.check_url(&url("http://[::ffff:a9fe:a9fe]/")).is_err());
        assert!(p.check_url(&url("http://2130706433/")).is_err());
        assert!(p.check_url(&url("https://8.8.8.8/")).is_ok());
        assert!(p.check_url(&url("https://localhost/")).is_ok());
    }

    #[tokio::test]
    async fn names_resolving_inside_are_refused_before_connecting() {
        let out = Outbound::default();
        let client = out.client(Duration::from_secs(5)).unwrap();
        let err = out
            .send(client.get("http://localhost:9/"), "test")
            .await
            .unwrap_err();
        assert_eq!(err, OutboundError::AddressNotAllowed);
        let err = out
            .send(client.get("http://127.0.0.1:9/"), "test")
            .await
            .unwrap_err();
        assert_eq!(err, OutboundError::AddressNotAllowed);
        // Allowed, the same port is merely closed.
        let open = Outbound::new(Policy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1".parse().unwrap(),
        ]));
        let client = open.client(Duration::from_secs(5)).unwrap();
        let err = open
            .send(client.get("http://localhost:9/"), "test")
            .await
            .unwrap_err();
        assert_eq!(err, OutboundError::Unreachable);
    }
}
