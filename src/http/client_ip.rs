//! The client's IP address: the peer's, unless the peer is a trusted proxy,
//! then the right-most `X-Forwarded-For` hop that is not one.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

/// Whether the connection comes from one of the trusted proxies.
pub fn from_trusted_proxy(req: &HttpRequest, trusted: &[IpNet]) -> bool {
    req.peer_addr()
        .is_some_and(|p| trusted.iter().any(|n| n.contains(&p.ip())))
}

/// The client address of `req` (see [`client_ip`]); `None` without a peer.
pub fn of_request(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let forwarded_for = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    Some(client_ip(req.peer_addr()?.ip(), forwarded_for, trusted))
}

pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let hops: Vec<IpAddr> = header
        .split(',')
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    // Right to left: everything a trusted proxy appended is trusted; the first
    // hop that is not is the client. If all are trusted, the left-most is.
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_only_from_trusted() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("198.51.100.1"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("198.51.100.1"), &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(
                ip("10.0.0.2"),
                Some("1.1.1.1, 198.51.100.1, 10.0.0.3"),
                &trusted
            ),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("garbage"), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(client_ip(ip("10.0.0.2"), None, &[]), ip("10.0.0.2"));
    }
}
