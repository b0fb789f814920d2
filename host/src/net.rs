//! Facts about client addresses that the connection layer and the sign-in
//! rate limits share, so that both count a client the same way.

use std::net::{IpAddr, Ipv6Addr};

/// The address a client is counted by: IPv4 as is (an IPv4-mapped IPv6
/// address is its IPv4 address), IPv6 by its /64. One household or machine
/// usually gets a whole /64, so counting single IPv6 addresses would let a
/// host dodge a limit by walking its own subnet.
pub(crate) fn client_group(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let g = |s: &str| client_group(s.parse().unwrap());
        assert_eq!(g("2001:db8:1:2:aaaa::1"), g("2001:db8:1:2:ffff::9"));
        assert_ne!(g("2001:db8:1:2::1"), g("2001:db8:1:3::1"));
        assert_eq!(g("::ffff:192.0.2.7"), g("192.0.2.7"));
        assert_eq!(g("192.0.2.7").to_string(), "192.0.2.7");
    }
}
