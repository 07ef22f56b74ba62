//! The tracker as a browser fetches it: `/js/script.js` from the real binary.

mod common;

use common::*;

#[test]
fn tracker_is_served_compressed_with_an_etag() {
    let env = Env::new("");
    let s = env.start();
    let plain = s.get("/js/script.js", &[("Accept-Encoding", "identity")]);
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(
        plain
            .header("cache-control")
            .unwrap()
            .contains("max-age=86400")
    );
    assert!(plain.body.contains("/api/event") && plain.body.contains("pushState"));
    let etag = plain.header("etag").expect("an ETag").to_string();

    for (accept, encoding) in [("gzip, deflate, br", "br"), ("gzip", "gzip")] {
        let raw = raw_get(&s, accept);
        assert!(
            raw.contains(&format!("content-encoding: {encoding}")),
            "{accept}: {raw}"
        );
        assert!(raw.contains("vary: accept-encoding"), "{raw}");
    }

    let again = s.get("/js/script.js", &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
}

/// The response head, lower-cased, of a GET with `Accept-Encoding` as given
/// (sent by hand: an HTTP client would decode the body and hide the encoding).
fn raw_get(s: &Server, accept: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "GET /js/script.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase()
}
