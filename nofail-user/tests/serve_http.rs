// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail serve --report` over a real loopback socket against slow,
//! silent, oversized and malformed clients: each is cut off or refused
//! with the status hyper gives, and the scrape of everyone else is
//! answered promptly throughout (output/serve.rs: the request-head
//! deadline of 5 s, the 16 KiB head bound).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Shutdown, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nofail_test_support::http::http_get;

/// The server's request-head deadline (output/serve.rs).
const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// `nofail serve --report` of a recorded run, on a free loopback port.
struct Serve {
    child: Child,
    port: u16,
}

impl Serve {
    fn start() -> Self {
        let report =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testing/reports/export_spin.json");
        let mut child = Command::new(env!("CARGO_BIN_EXE_nofail"))
            .args(["serve", "--listen", "127.0.0.1:0", "--report"])
            .arg(report)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = lines.next().expect("serve said nothing").unwrap();
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Self { child, port }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(HEAD_DEADLINE * 3)).unwrap();
        s
    }

    /// A scrape answered 200 with the metrics, within a second.
    fn assert_scrapes(&self, while_: &str) {
        let t = Instant::now();
        let (code, body) = http_get(self.port, "/metrics").unwrap();
        assert_eq!(code, 200, "{while_}");
        assert!(body.contains("nofail_vmalloc_calls_total"), "{while_}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{while_}: scrape took {:?}",
            t.elapsed()
        );
    }

    /// Sends `request` whole, shuts the write half, reads to the close:
    /// the status code (None: closed without a response).
    fn exchange(&self, request: &[u8]) -> Option<u32> {
        let mut s = self.connect();
        // The server may refuse and close before all of it is read.
        let _ = s.write_all(request);
        let _ = s.shutdown(Shutdown::Write);
        let mut back = Vec::new();
        match s.read_to_end(&mut back) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{:?}: {e}", String::from_utf8_lossy(request)),
        }
        status(&back)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of the first response in `back`.
fn status(back: &[u8]) -> Option<u32> {
    let text = String::from_utf8_lossy(back);
    let line = text.lines().next()?;
    assert!(line.starts_with("HTTP/1.1 "), "not a status line: {line:?}");
    line.split(' ').nth(1)?.parse().ok()
}

/// Reads until the server closes `s`; how long that took from `since`,
/// and what it sent.
fn until_closed(mut s: TcpStream, since: Instant) -> (Duration, Vec<u8>) {
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    (since.elapsed(), back)
}

#[test]
fn a_slowloris_is_cut_off_at_the_head_deadline_while_others_are_served() {
    let serve = Serve::start();
    let mut slow = serve.connect();
    let start = Instant::now();
    let head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris-trickling-one-byte-at-a-time\r\nAccept: */*\r\n\r\n";
    let trickle = std::thread::spawn(move || {
        // A byte every 100 ms: the head would take 10 s; the server
        // closes the connection before that, and writing then fails.
        for b in head {
            if slow.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        until_closed(slow, start)
    });
    for i in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        serve.assert_scrapes(&format!("{i}: while a slowloris trickles"));
    }
    let (closed_after, back) = trickle.join().unwrap();
    assert!(
        closed_after >= HEAD_DEADLINE && closed_after < HEAD_DEADLINE + Duration::from_secs(2),
        "the slow head was cut after {closed_after:?}"
    );
    // Hyper answers a head that timed out with 408 (or just closes).
    assert!(
        matches!(status(&back), None | Some(408)),
        "{:?}",
        String::from_utf8_lossy(&back)
    );
    serve.assert_scrapes("after the slowloris");
}

#[test]
fn a_silent_client_holds_up_nobody_and_is_closed_at_the_deadline() {
    let serve = Serve::start();
    let start = Instant::now();
    let silent: Vec<TcpStream> = (0..20).map(|_| serve.connect()).collect();
    for i in 0..5 {
        serve.assert_scrapes(&format!("{i}: with 20 silent connections open"));
    }
    for s in silent {
        let (after, back) = until_closed(s, start);
        assert!(
            after < HEAD_DEADLINE + Duration::from_secs(2),
            "a silent connection stayed open {after:?}"
        );
        assert!(matches!(status(&back), None | Some(408)));
    }
}

#[test]
fn a_huge_head_is_refused() {
    let serve = Serve::start();
    // Past the 16 KiB head bound: in one header, in many, in the URI.
    let one = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let many = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..2000)
            .map(|i| format!("X-H{i}: value\r\n"))
            .collect::<String>()
    );
    let uri = format!(
        "GET /metrics?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "q".repeat(64 << 10)
    );
    for (what, request, want) in [
        ("one huge header", &one, Some(431)),
        ("2000 headers", &many, Some(431)),
        // Past the buffer before the request line ends: hyper says 431
        // here too, not 414.
        ("a 64 KiB URI", &uri, Some(431)),
    ] {
        assert_eq!(serve.exchange(request.as_bytes()), want, "{what}");
        serve.assert_scrapes(&format!("after {what}"));
    }
}

/// Each malformed request (20 kinds, five variants each) gets the status
/// hyper (or nofail's handler) gives it, or a close; a scrape is served
/// after every one.
#[test]
fn malformed_requests_are_refused_and_the_server_keeps_serving() {
    let serve = Serve::start();
    let mut sent = 0;
    for v in 0..5 {
        let junk = "x".repeat(v * 7 + 1);
        let cases: Vec<(String, Vec<u8>, Option<u32>)> = vec![
            (
                "bad method".into(),
                format!("G@T /metrics{junk} HTTP/1.1\r\nHost: x\r\n\r\n").into(),
                Some(400),
            ),
            (
                "unknown method".into(),
                format!("FETCH{v} /metrics HTTP/1.1\r\nHost: x\r\n\r\n").into(),
                Some(405),
            ),
            (
                "POST".into(),
                format!(
                    "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{junk}",
                    junk.len()
                )
                .into(),
                Some(405),
            ),
            (
                "bad version".into(),
                format!("GET /metrics HTTP/{v}.7\r\nHost: x\r\n\r\n").into(),
                Some(400),
            ),
            (
                "junk version".into(),
                format!("GET /metrics HTTP/1.1{junk}\r\nHost: x\r\n\r\n").into(),
                Some(400),
            ),
            (
                "no version".into(),
                format!("GET /metrics{junk}\r\n\r\n").into(),
                Some(400),
            ),
            (
                "NUL in the URI".into(),
                [
                    &b"GET /met\0rics"[..],
                    junk.as_bytes(),
                    b" HTTP/1.1\r\nHost: x\r\n\r\n",
                ]
                .concat(),
                Some(400),
            ),
            (
                "NUL in a header name".into(),
                [
                    &b"GET /metrics HTTP/1.1\r\nHo\0st: x"[..],
                    junk.as_bytes(),
                    b"\r\n\r\n",
                ]
                .concat(),
                Some(400),
            ),
            (
                "NUL in a header value".into(),
                [
                    &b"GET /metrics HTTP/1.1\r\nHost: x\0"[..],
                    junk.as_bytes(),
                    b"\r\n\r\n",
                ]
                .concat(),
                Some(400),
            ),
            (
                "space before the colon".into(),
                format!("GET /metrics HTTP/1.1\r\nHost : x{junk}\r\n\r\n").into(),
                Some(400),
            ),
            (
                "header without a colon".into(),
                format!("GET /metrics HTTP/1.1\r\nHost x{junk}\r\n\r\n").into(),
                Some(400),
            ),
            (
                "obs-fold".into(),
                format!("GET /metrics HTTP/1.1\r\nHost: x\r\n {junk}\r\n\r\n").into(),
                Some(400),
            ),
            (
                "bare CR".into(),
                format!("GET /metrics HTTP/1.1\rHost: x{junk}\r\r").into(),
                Some(400),
            ),
            (
                "two Content-Lengths".into(),
                format!(
                    "GET /metrics HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: {}\r\n\r\nab",
                    v + 2
                )
                .into(),
                Some(400),
            ),
            (
                "negative Content-Length".into(),
                format!(
                    "GET /metrics HTTP/1.1\r\nContent-Length: -{}\r\n\r\n",
                    v + 1
                )
                .into(),
                Some(400),
            ),
            (
                "chunked garbage".into(),
                format!("POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz{junk}\r\n")
                    .into(),
                Some(405),
            ),
            (
                "chunked then not".into(),
                format!("GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked, gzip{v}\r\n\r\n")
                    .into(),
                Some(400),
            ),
            (
                "not found".into(),
                format!("GET /{junk} HTTP/1.1\r\nHost: x\r\n\r\n").into(),
                Some(404),
            ),
            (
                "TLS hello".into(),
                [&[0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01][..], junk.as_bytes()].concat(),
                Some(400),
            ),
            (
                "half a request line".into(),
                format!("GET /metr{junk}").into(),
                None,
            ),
        ];
        for (what, request, want) in cases {
            assert_eq!(
                serve.exchange(&request),
                want,
                "{what} ({:?})",
                String::from_utf8_lossy(&request)
            );
            serve.assert_scrapes(&format!("after {what}"));
            sent += 1;
        }
    }
    assert_eq!(sent, 100);
}
