//! Who is on the other end of a request: the client's address, for the
//! audit log and the sign-in rate limits.
//!
//! Behind a reverse proxy every connection comes from the proxy, and the
//! client's address is only in `X-Forwarded-For`, which anyone can send.
//! So the header is believed only from the proxies the admin lists in
//! `[http] trusted_proxies`, and only as far as the chain of those proxies
//! goes: each trusted proxy appends the address it saw, so walking the
//! header from the right and skipping trusted hops reaches the first address
//! that no trusted party vouches for, which is the client (or whoever
//! pretends to be, from outside). A header that does not parse is ignored
//! rather than half-believed.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

const FORWARDED_FOR: &str = "x-forwarded-for";

/// One hop of `X-Forwarded-For`: an address, or an address with a port
/// (some proxies add it; IPv6 then in brackets).
fn hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

impl TrustedProxies {
    /// Trusts `nets`; none means the socket peer is always the client.
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    fn trusts(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client's address, from the connection's `peer` (none when the
    /// router is driven without a socket) and the request headers.
    pub fn client_address(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        // An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d.
        let peer = peer?.to_canonical();
        if !self.trusts(&peer) {
            return Some(peer);
        }
        // Several header lines form one list, in order. Every hop must
        // parse before any is believed.
        let mut hops: Vec<IpAddr> = Vec::new();
        for v in headers.get_all(FORWARDED_FOR).iter() {
            let Ok(text) = v.to_str() else {
                return Some(peer);
            };
            for part in text.split(',') {
                match hop(part) {
                    Some(ip) => hops.push(ip),
                    None => return Some(peer),
                }
            }
        }
        let mut leftmost = peer;
        for ip in hops.into_iter().rev() {
            if !self.trusts(&ip) {
                return Some(ip);
            }
            leftmost = ip;
        }
        // Every hop is a trusted proxy: the chain starts at the leftmost.
        Some(leftmost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() {
        let none = TrustedProxies::default();
        let h = headers(&["203.0.113.9"]);
        assert_eq!(none.client_address(ip("10.0.0.5"), &h), ip("10.0.0.5"));
        assert_eq!(none.client_address(None, &h), None);
    }

    #[test]
    fn an_untrusted_peer_is_the_client_even_with_a_header() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&["198.51.100.1"]);
        assert_eq!(p.client_address(ip("203.0.113.7"), &h), ip("203.0.113.7"));
    }

    #[test]
    fn trusted_hops_are_skipped_from_the_right() {
        let p = proxies(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client claims to be 1.1.1.1; the edge proxy saw 203.0.113.9.
        let h = headers(&["1.1.1.1, 203.0.113.9, 10.1.2.3"]);
        assert_eq!(p.client_address(ip("127.0.0.1"), &h), ip("203.0.113.9"));
        // The same list over two header lines.
        let h = headers(&["1.1.1.1, 203.0.113.9", "10.1.2.3"]);
        assert_eq!(p.client_address(ip("127.0.0.1"), &h), ip("203.0.113.9"));
        // Ports and bracketed IPv6 are accepted.
        let h = headers(&["[2001:db8::7]:4711, 10.9.9.9:80"]);
        assert_eq!(p.client_address(ip("10.0.0.1"), &h), ip("2001:db8::7"));
    }

    #[test]
    fn a_chain_of_trusted_proxies_ends_at_its_leftmost_hop() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&["10.0.0.9, 10.0.0.8"]);
        assert_eq!(p.client_address(ip("10.0.0.1"), &h), ip("10.0.0.9"));
    }

    #[test]
    fn malformed_or_missing_headers_fall_back_to_the_peer() {
        let p = proxies(&["10.0.0.0/8"]);
        for bad in [
            "unknown",
            "203.0.113.9,",
            "203.0.113.9, , 10.0.0.2",
            "not an address, 10.0.0.2",
            "",
        ] {
            let h = headers(&[bad]);
            assert_eq!(
                p.client_address(ip("10.0.0.1"), &h),
                ip("10.0.0.1"),
                "{bad:?}"
            );
        }
        assert_eq!(
            p.client_address(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        let mut h = HeaderMap::new();
        h.insert(
            FORWARDED_FOR,
            HeaderValue::from_bytes(b"203.0.113.9\xff").unwrap(),
        );
        assert_eq!(p.client_address(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_blocks() {
        let p = proxies(&["127.0.0.1/32"]);
        let h = headers(&["192.0.2.44"]);
        assert_eq!(
            p.client_address(ip("::ffff:127.0.0.1"), &h),
            ip("192.0.2.44")
        );
        assert_eq!(
            TrustedProxies::default().client_address(ip("::ffff:192.0.2.1"), &h),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn very_long_chains_are_walked_without_trouble() {
        let p = proxies(&["10.0.0.0/8"]);
        let long = vec!["10.0.0.3"; 5000].join(",");
        let h = headers(&[&format!("198.51.100.2,{long}")]);
        assert_eq!(p.client_address(ip("10.0.0.1"), &h), ip("198.51.100.2"));
    }
}
