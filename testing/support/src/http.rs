// SPDX-License-Identifier: MIT OR Apache-2.0
//! A plain HTTP/1.1 client for scraping `nofail serve` on loopback.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use anyhow::{Context as _, Result};

/// GET `path` from 127.0.0.1:`port` (Connection: close); the status code
/// and the body.
pub fn http_get(port: u16, path: &str) -> Result<(u32, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP head")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((
        code,
        if chunked {
            dechunk(body)?
        } else {
            body.to_string()
        },
    ))
}

/// A chunked body (Go's net/http sends one for answers over 4 KiB, as
/// Prometheus' API does) as one string.
fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .context("a chunk without its size line")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size:?}"))?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("a chunk shorter than its size")?);
        body = rest[size..]
            .strip_prefix("\r\n")
            .context("a chunk not ended by CRLF")?;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_joined() {
        assert_eq!(
            super::dechunk("4\r\nWiki\r\n6;x=1\r\npedia \r\n0\r\n\r\n").unwrap(),
            "Wikipedia "
        );
        assert!(super::dechunk("9\r\nshort\r\n0\r\n\r\n").is_err());
    }
}
