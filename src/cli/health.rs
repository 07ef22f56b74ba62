//! `tally health`: asks the local server's `/api/health` over plain TCP,
//! for container health checks where no curl is installed.

use std::io::Write;

use anyhow::{Context, bail};

use crate::config::Settings;

pub(super) fn health(settings: &Settings) -> anyhow::Result<()> {
    use std::io::Read;
    let mut addr = settings.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let timeout = std::time::Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /api/health HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream
        .take(64 * 1024)
        .read_to_string(&mut answer)
        .with_context(|| format!("reading from {addr}"))?;
    let status = answer.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("http://{addr}/api/health answered {status:?}");
    }
    println!("ok");
    Ok(())
}
