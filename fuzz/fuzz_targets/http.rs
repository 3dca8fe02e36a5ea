// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail serve`'s HTTP server (output/serve.rs, hyper) on a real
//! loopback socket: started once in a thread of its own, serving a
//! recorded report. Each input is written raw to a new connection, the
//! write half shut, and whatever comes back read: nothing, or HTTP/1.1
//! responses, within the request-head deadline. Every 500 inputs, and
//! for every input that got no answer, a well-formed `GET /metrics` must
//! still get 200 and the metrics.
#![no_main]

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use libfuzzer_sys::fuzz_target;
use nofail_user::output::{json, serve::serve};

/// The server's request-head deadline (output/serve.rs) and some slack.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_secs(2);

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        // A peer gone mid-write is an EPIPE error, not a signal (libFuzzer's
        // main is not Rust's, which would ignore SIGPIPE).
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let report = json::parse_report(include_str!("../../testing/reports/export_spin.json"))
            .expect("the recorded report reads");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                serve(listener, Box::new(report), 20, std::future::pending()).await;
            });
        });
        addr
    })
}

/// Closes with a reset rather than a FIN: no TIME_WAIT left behind for
/// each of millions of connections.
fn reset_on_close(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
}

/// Writes `request`, shuts the write half, reads until the server closes;
/// what came back and how long it took.
fn exchange(addr: SocketAddr, request: &[u8]) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).expect("the server accepts");
    reset_on_close(&s);
    s.set_read_timeout(Some(HEAD_DEADLINE + SLACK)).unwrap();
    // The server may answer and close before all is written.
    let _ = s.write_all(request);
    let _ = s.shutdown(Shutdown::Write);
    let mut back = Vec::new();
    match s.read_to_end(&mut back) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            panic!("connection held past the head deadline: {e}")
        }
        Err(e) => panic!("read: {e}"),
    }
    (back, start.elapsed())
}

fn assert_metrics_served(addr: SocketAddr) {
    let (back, _) = exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&back);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("nofail_vmalloc_calls_total"),
        "GET /metrics not served: {text:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let addr = server();
    let (back, took) = exchange(addr, data);
    assert!(took < HEAD_DEADLINE + SLACK, "took {took:?}");
    // Every response hyper writes starts with a status line.
    if !back.is_empty() {
        assert!(
            // An HTTP/1.0 request is answered in HTTP/1.0.
            (back.starts_with(b"HTTP/1.1 ") || back.starts_with(b"HTTP/1.0 "))
                && back.len() >= 12
                && back[9..12].iter().all(u8::is_ascii_digit),
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&back)
        );
    }
    if back.is_empty() || RUNS.fetch_add(1, Ordering::Relaxed).is_multiple_of(500) {
        assert_metrics_served(addr);
    }
});
