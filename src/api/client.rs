//! The client's address: the socket peer, or, behind reverse proxies named in `TRUSTED_PROXIES`,
//! the right-most `X-Forwarded-For` hop that is not one of them. Every per-client throttle keys
//! on it, so that behind a proxy each customer keeps a throttle of their own, and nobody can
//! choose their address by sending the header straight to the service.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::{IpNet, Ipv6Net};

/// What per-client throttles count `req` by: its client's address (behind a trusted proxy, the
/// one forwarded), an IPv6 client's /64.
pub fn client_key(req: &HttpRequest, trusted: &[IpNet]) -> String {
    throttle_key(client_ip(req, trusted))
}

/// The client of `req` (the peer, or behind a trusted proxy the right-most untrusted
/// `X-Forwarded-For` hop), or None for a request without a peer (a test request made in
/// process).
pub fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let forwarded = req.headers().get_all("x-forwarded-for");
    client_ip_of(
        req.peer_addr()?.ip(),
        forwarded.map(|value| value.as_bytes()),
        trusted,
    )
}

/// The client behind `peer`, given the values of its `X-Forwarded-For` headers.
pub fn client_ip_of<'a>(
    peer: IpAddr,
    forwarded: impl Iterator<Item = &'a [u8]>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    if trusted.is_empty() {
        // Nobody's forwarding is believed: the hops are not even read.
        return Some(canonical(peer));
    }
    let forwarded: Vec<&str> = forwarded
        .filter_map(|value| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(','))
        .collect();
    Some(resolve(peer, &forwarded, trusted))
}

/// Walks the chain from the peer leftwards while the hops are trusted proxies.
fn resolve(peer: IpAddr, forwarded: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    let mut client = canonical(peer);
    if !is_trusted(&client) {
        return client;
    }
    for hop in forwarded.iter().rev() {
        // A hop that is not an address ends the walk at the last proxy that said anything.
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = canonical(ip);
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// An IPv4 address written as IPv6 (`::ffff:1.2.3.4`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What a per-client throttle counts: an IPv4 address, or an IPv6 client's /64 (one customer's
/// network hands out many addresses of its /64).
pub fn throttle_key(ip: Option<IpAddr>) -> String {
    match ip {
        None => String::from("unknown"),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => Ipv6Net::new(v6, 64)
            .map(|net| net.trunc().to_string())
            .unwrap_or_else(|_| v6.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_rightmost_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // A client may prepend anything; only the hops the proxies added count.
        let chain = ["6.6.6.6", "203.0.113.7", "10.0.0.2"];
        assert_eq!(resolve(ip("10.0.0.1"), &chain, &trusted), ip("203.0.113.7"));
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            resolve(ip("198.51.100.1"), &chain, &trusted),
            ip("198.51.100.1")
        );
        // Without trusted proxies the header is ignored.
        assert_eq!(resolve(ip("10.0.0.1"), &chain, &[]), ip("10.0.0.1"));
        // A chain of proxies only: the left-most hop.
        assert_eq!(
            resolve(ip("10.0.0.1"), &["10.1.1.1"], &trusted),
            ip("10.1.1.1")
        );
        // Garbage ends the walk at the last proxy.
        assert_eq!(
            resolve(ip("10.0.0.1"), &["nonsense"], &trusted),
            ip("10.0.0.1")
        );
        let mapped = vec!["127.0.0.1/32".parse().unwrap()];
        assert_eq!(
            resolve(ip("::ffff:127.0.0.1"), &["192.0.2.9"], &mapped),
            ip("192.0.2.9")
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a = throttle_key(Some(ip("2001:db8:1:2:aaaa::1")));
        let b = throttle_key(Some(ip("2001:db8:1:2:bbbb::9")));
        let other = throttle_key(Some(ip("2001:db8:1:3::1")));
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(throttle_key(Some(ip("192.0.2.1"))), "192.0.2.1");
    }
}
