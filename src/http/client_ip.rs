//! The client's IP address: the peer's, unless the peer is a trusted proxy,
//! then the right-most `X-Forwarded-For` hop that is not one.
//!
//! Everything left of the hop a trusted proxy appended was written by the
//! client, so the walk goes right to left over every header line and stops
//! at the first hop that is not a trusted proxy, or at the first that is
//! not an address at all: skipping one would let the client's own values
//! count. Hops are split from the header's bytes, so a client's hop that is
//! not text is one unreadable hop, and the address a proxy appended after
//! it on the same line is still read.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The client as the trusted proxies in front report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub ip: IpAddr,
    /// False when the walk stopped at a hop that is not an address (such as
    /// `unknown`): `ip` is then the nearest trusted hop (a proxy, or the
    /// peer), standing in for a client that cannot be named. It serves for
    /// limits and visitor ids, never to grant access.
    pub named: bool,
}

/// Whether the connection comes from one of the trusted proxies.
pub fn from_trusted_proxy(req: &HttpRequest, trusted: &[IpNet]) -> bool {
    req.peer_addr()
        .is_some_and(|p| is_trusted(&p.ip().to_canonical(), trusted))
}

/// Whether the browser reached the proxy over https: Tally itself speaks
/// plain HTTP, so only a trusted proxy's `X-Forwarded-Proto` tells, and a
/// client talking to Tally directly cannot claim it.
pub fn forwarded_https(req: &HttpRequest, trusted: &[IpNet]) -> bool {
    from_trusted_proxy(req, trusted)
        && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The client address of `req` (see [`resolve`]); `None` without a peer.
pub fn of_request(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    resolve(req, trusted).map(|c| c.ip)
}

/// The client of `req`, as the module describes; `None` without a peer.
pub fn resolve(req: &HttpRequest, trusted: &[IpNet]) -> Option<Client> {
    let peer = req.peer_addr()?.ip();
    // Lines in the order received, as one list (RFC 9110, 5.3), split into
    // hops as bytes: a proxy such as nginx appends the real address to the
    // client's own header on one line, so a byte that is not text in the
    // client's part must spoil that hop only, not the one appended after it.
    let lines: Vec<&[u8]> = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| v.as_bytes())
        .collect();
    let hops = lines.iter().flat_map(|line| line.split(|b| *b == b','));
    Some(walk(peer, hops, trusted))
}

fn is_trusted(ip: &IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(ip))
}

/// One `X-Forwarded-For` hop: `ip`, `ip:port`, `[v6]` or `[v6]:port`,
/// with spaces or tabs around it. IPv4-mapped IPv6 addresses are read as
/// IPv4, so they meet the same lists. Bytes that are not text are no
/// address.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop.trim_ascii()).ok()?;
    let ip = if let Ok(ip) = hop.parse::<IpAddr>() {
        ip
    } else if let Ok(sock) = hop.parse::<SocketAddr>() {
        sock.ip()
    } else {
        IpAddr::V6(
            hop.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<Ipv6Addr>()
                .ok()?,
        )
    };
    Some(ip.to_canonical())
}

/// The client behind `peer`. An untrusted peer is the client. Behind a
/// trusted one, hops are read right to left: trusted proxies are passed,
/// the first hop that is not one is the client, and a hop that is not an
/// address stops the walk with the nearest trusted hop standing in
/// ([`Client::named`] false). If every hop is a trusted proxy, the
/// left-most is the client. Empty list elements are ignored. `hops` come
/// in the order received.
fn walk<'a>(
    peer: IpAddr,
    hops: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &[IpNet],
) -> Client {
    let peer = peer.to_canonical();
    let mut nearest = Client {
        ip: peer,
        named: true,
    };
    if !is_trusted(&peer, trusted) {
        return nearest;
    }
    for hop in hops.rev().filter(|h| !h.trim_ascii().is_empty()) {
        let Some(ip) = parse_hop(hop) else {
            nearest.named = false;
            return nearest;
        };
        nearest.ip = ip;
        if !is_trusted(&ip, trusted) {
            return nearest;
        }
    }
    nearest
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk over one header line.
    fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> Client {
        let hops = forwarded_for
            .into_iter()
            .flat_map(|h| h.as_bytes().split(|b| *b == b','));
        walk(peer, hops, trusted)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn named(s: &str) -> Client {
        Client {
            ip: ip(s),
            named: true,
        }
    }

    fn standing_in(s: &str) -> Client {
        Client {
            ip: ip(s),
            named: false,
        }
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_only_from_trusted() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("198.51.100.1"), &trusted),
            named("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("198.51.100.1"), &trusted),
            named("198.51.100.1")
        );
        assert_eq!(
            client_ip(
                ip("10.0.0.2"),
                Some("1.1.1.1, 198.51.100.1, 10.0.0.3"),
                &trusted
            ),
            named("198.51.100.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("10.0.0.7, 10.0.0.3"), &trusted),
            named("10.0.0.7"),
            "all trusted: the left-most"
        );
        assert_eq!(client_ip(ip("10.0.0.2"), None, &[]), named("10.0.0.2"));
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some(" , "), &trusted),
            named("10.0.0.2")
        );
    }

    #[test]
    fn every_hop_shape_is_read() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        let peer = ip("10.0.0.2");
        for (hop, client) in [
            ("198.51.100.1", "198.51.100.1"),
            ("198.51.100.1:8080", "198.51.100.1"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("::ffff:198.51.100.1", "198.51.100.1"),
            ("[::ffff:198.51.100.1]:80", "198.51.100.1"),
        ] {
            // Written by the client, then by a trusted proxy with its port.
            let header = format!("127.0.0.1, {hop}, 10.0.0.3:1234, [fd00::1]:80");
            assert_eq!(
                client_ip(peer, Some(&header), &trusted),
                named(client),
                "{header}"
            );
        }
        // A trusted proxy written with a port is still a trusted proxy.
        assert_eq!(
            client_ip(peer, Some("10.0.0.9:443"), &trusted),
            named("10.0.0.9")
        );
    }

    #[test]
    fn a_hop_that_is_no_address_ends_the_walk() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let peer = ip("10.0.0.2");
        for hop in [
            "unknown",
            "_hidden",
            "?",
            "198.51.100.1:99999",
            "198.51.100.1:",
            "[2001:db8::1",
            "2001:db8::1]:80",
            "[198.51.100.1]",
            "198.51.100.1 198.51.100.2",
            "localhost",
        ] {
            let header = format!("127.0.0.1, {hop}");
            assert_eq!(
                client_ip(peer, Some(&header), &trusted),
                standing_in("10.0.0.2"),
                "{header}"
            );
            let header = format!("127.0.0.1, {hop}, 10.0.0.3");
            assert_eq!(
                client_ip(peer, Some(&header), &trusted),
                standing_in("10.0.0.3"),
                "the nearest trusted hop: {header}"
            );
        }
    }

    #[test]
    fn every_header_line_counts_in_order() {
        use actix_web::test::TestRequest;
        let trusted = nets(&["127.0.0.1/32"]);
        let req = |lines: &[&str]| {
            let mut r = TestRequest::default().peer_addr("127.0.0.1:40000".parse().unwrap());
            for l in lines {
                r = r.append_header(("X-Forwarded-For", *l));
            }
            r.to_http_request()
        };
        let two = req(&["127.0.0.1", "203.0.113.9"]);
        assert_eq!(resolve(&two, &trusted), Some(named("203.0.113.9")));
        let three = req(&["198.51.100.1", "127.0.0.1:5000, 203.0.113.9", "127.0.0.1"]);
        assert_eq!(of_request(&three, &trusted), Some(ip("203.0.113.9")));
        let none = req(&[]);
        assert_eq!(resolve(&none, &trusted), Some(named("127.0.0.1")));
        let unreadable = TestRequest::default()
            .peer_addr("127.0.0.1:40000".parse().unwrap())
            .append_header(("X-Forwarded-For", "127.0.0.1"))
            .append_header((
                "X-Forwarded-For",
                actix_web::http::header::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
            ))
            .to_http_request();
        assert_eq!(
            resolve(&unreadable, &trusted),
            Some(standing_in("127.0.0.1"))
        );
    }

    #[test]
    fn a_hop_that_is_not_text_spoils_only_itself() {
        use actix_web::http::header::HeaderValue;
        use actix_web::test::TestRequest;
        let trusted = nets(&["127.0.0.1/32"]);
        // nginx appends the real address to the client's own header, on
        // one line.
        let req = |line: &'static [u8]| {
            TestRequest::default()
                .peer_addr("127.0.0.1:40000".parse().unwrap())
                .append_header(("X-Forwarded-For", HeaderValue::from_bytes(line).unwrap()))
                .to_http_request()
        };
        assert_eq!(
            resolve(&req(b"caf\xe9, 203.0.113.5"), &trusted),
            Some(named("203.0.113.5"))
        );
        assert_eq!(
            resolve(&req(b"203.0.113.5, \xff, 127.0.0.1"), &trusted),
            Some(standing_in("127.0.0.1")),
            "an unreadable hop right of the client still ends the walk"
        );
        assert_eq!(
            resolve(&req(b"\xe9\t203.0.113.5 ,127.0.0.1"), &trusted),
            Some(standing_in("127.0.0.1"))
        );
        assert_eq!(
            resolve(&req(b"caf\xe9,\t203.0.113.5\t"), &trusted),
            Some(named("203.0.113.5"))
        );
    }
}
