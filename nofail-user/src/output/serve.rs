// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail serve`: Prometheus' pull endpoint. `GET /metrics` renders the
//! live counts (or a recorded report) at scrape time. Loopback by default:
//! the metrics name kernel call sites, which is not for every network.
//! HTTP is hyper's: connections are served concurrently with keep-alive,
//! a deadline and a size bound for each request head, and a bound on open
//! connections, so idle or hostile clients cannot hold up a scrape.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::{
    model::source::ReportSource,
    output::{
        prometheus::{self, Sticky},
        stdout,
    },
};

/// Request heads must arrive within this long (a half-sent request line
/// cannot hold a connection), and be at most this large.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Connections served at once; beyond it new ones are closed at accept.
const MAX_CONNECTIONS: usize = 256;

/// What a scrape reads: the source, and the callers that have their own
/// label so far (kept for the life of the process: output/prometheus.rs).
struct Endpoint {
    source: Box<dyn ReportSource>,
    labels: Sticky,
    /// The last exposition read, and the reads that failed since start.
    last: Option<String>,
    failed_reads: u64,
}

impl Endpoint {
    /// The counts as of now. When the read fails (under the memory
    /// pressure nofail watches, a map lookup's copy buffer can: ENOMEM),
    /// the scrape is answered with the last counts read, the failure said
    /// on stderr and counted in `nofail_failed_reads_total`: a scrape
    /// that errs would show as the target down, and the counters are
    /// still right, only older.
    fn metrics(&mut self) -> anyhow::Result<String> {
        let body = match self.source.report() {
            Ok(report) => {
                let body = prometheus::render_sticky(&report, &mut self.labels);
                self.last = Some(body.clone());
                body
            }
            Err(e) => {
                self.failed_reads += 1;
                stdout::say(&format!(
                    "nofail: warning: reading the counts for a scrape failed: {}; answered with the last counts read",
                    format!("{e:#}").lines().next().unwrap_or_default()
                ));
                match &self.last {
                    Some(body) => body.clone(),
                    None => return Err(e),
                }
            }
        };
        Ok(body
            + &prometheus::failed_reads(self.failed_reads)
            + &prometheus::alloc_retries(crate::alloc::retries()))
    }
}

/// Serves `source` on `listener` until `stop` resolves. Connections are
/// served concurrently on this thread; a scrape reads the source
/// synchronously under the RefCell, so scrapes never overlap.
pub async fn serve(
    listener: TcpListener,
    source: Box<dyn ReportSource>,
    top: usize,
    stop: impl Future<Output = ()>,
) {
    let source = Rc::new(RefCell::new(Endpoint {
        source,
        labels: Sticky::new(top),
        last: None,
        failed_reads: 0,
    }));
    let local = tokio::task::LocalSet::new();
    tokio::pin!(stop);
    local
        .run_until(async move {
            let open = Rc::new(Cell::new(0usize));
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = ticks.tick() => source.borrow_mut().source.tick(),
                    accepted = listener.accept() => {
                        let stream = match accepted {
                            Ok((stream, _)) => stream,
                            Err(e) => {
                                said_if_refused("accepting a scrape's connection", &e);
                                continue;
                            }
                        };
                        if open.get() >= MAX_CONNECTIONS {
                            drop(stream);
                            continue;
                        }
                        open.set(open.get() + 1);
                        let (source, open) = (source.clone(), open.clone());
                        tokio::task::spawn_local(async move {
                            serve_connection(stream, source).await;
                            open.set(open.get() - 1);
                        });
                    }
                    _ = &mut stop => break,
                }
            }
        })
        .await;
}

/// One connection: HTTP/1.1 with keep-alive, as Prometheus scrapes.
async fn serve_connection(stream: TcpStream, source: Rc<RefCell<Endpoint>>) {
    let service = service_fn(move |req: Request<Incoming>| {
        let response = answer(&req, &source);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_DEADLINE)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true)
        // A client that shuts its write side after the request (`nc -N`)
        // still gets the answer: without this hyper dropped the request
        // when it saw the EOF first (found by the http fuzz target).
        .half_close(true)
        .serve_connection(TokioIo::new(stream), service);
    // A client that goes away or times out ends only its own connection;
    // the kernel refusing nofail's own socket memory is said.
    if let Err(e) = conn.await {
        said_if_refused("answering a scrape", &e);
    }
}

/// Says on stderr that `what` failed because the kernel refused nofail
/// memory (ENOMEM, ENOBUFS: under the pressure nofail watches, a socket
/// buffer can fail), so that a scrape left unanswered is accounted for;
/// other connection errors are the client's (gone, timed out) and not said.
fn said_if_refused(what: &str, e: &(dyn std::error::Error + 'static)) {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::ENOMEM | libc::ENOBUFS))
        {
            stdout::say(&format!(
                "nofail: warning: {what} failed: {io}; carrying on"
            ));
            return;
        }
        source = err.source();
    }
}

fn answer(req: &Request<Incoming>, source: &RefCell<Endpoint>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_str(kind).expect("valid content type"),
        );
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => match source.borrow_mut().metrics() {
            Ok(body) => reply(StatusCode::OK, prometheus::CONTENT_TYPE, body),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("nofail: cannot read the counts: {e:#}\n"),
            ),
        },
        "/" => reply(
            StatusCode::OK,
            "text/plain",
            "nofail: retry-loop metrics at /metrics\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    /// Gives `reports` in turn: `None` is a read that fails with ENOMEM.
    struct Flaky(Vec<Option<crate::model::report::Report>>);

    impl ReportSource for Flaky {
        fn report(&mut self) -> anyhow::Result<std::borrow::Cow<'_, crate::model::report::Report>> {
            match self.0.remove(0) {
                Some(r) => Ok(std::borrow::Cow::Owned(r)),
                None => Err(std::io::Error::from_raw_os_error(libc::ENOMEM).into()),
            }
        }
    }

    #[test]
    fn a_failed_read_is_answered_with_the_last_counts_and_counted() {
        let stats = nofail_common::CallerStats {
            calls: 5,
            ..Default::default()
        };
        let report = |name: &str| {
            crate::model::report::sample(vec![crate::model::report::sample_row(name, &stats)])
        };
        let mut e = Endpoint {
            source: Box::new(Flaky(vec![
                None,
                Some(report("first+0x1")),
                None,
                None,
                Some(report("second+0x1")),
            ])),
            labels: Sticky::new(20),
            last: None,
            failed_reads: 0,
        };
        // Nothing read yet: the scrape fails (a 500), and is counted.
        assert!(e.metrics().is_err());
        let first = e.metrics().unwrap();
        assert!(first.contains("caller=\"first+0x1\""), "{first}");
        assert!(first.contains("nofail_failed_reads_total 1\n"), "{first}");
        for n in 2..=3 {
            let again = e.metrics().unwrap();
            assert!(again.contains("caller=\"first+0x1\""), "{again}");
            assert!(
                again.contains(&format!("nofail_failed_reads_total {n}\n")),
                "{again}"
            );
            assert!(again.contains("\nnofail_alloc_retries_total "), "{again}");
        }
        let second = e.metrics().unwrap();
        assert!(second.contains("caller=\"second+0x1\""), "{second}");
        assert!(second.contains("nofail_failed_reads_total 3\n"), "{second}");
    }

    /// Found by the http fuzz target: a scrape whose client shut its
    /// write side right after the request got no answer whenever hyper
    /// read the EOF before it wrote the response.
    #[tokio::test]
    async fn a_client_that_shuts_its_write_side_still_gets_the_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Enough rows that rendering them gives hyper time to see the EOF.
        let stats = nofail_common::CallerStats::default();
        let rows = (0..200)
            .map(|i| crate::model::report::sample_row(&format!("f{i}+0x1"), &stats))
            .collect();
        let report = crate::model::report::sample(rows);
        let client = tokio::task::spawn_blocking(move || {
            (0..100)
                .map(|_| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                        .unwrap();
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    let mut back = String::new();
                    let _ = s.read_to_string(&mut back);
                    back
                })
                .collect::<Vec<String>>()
        });
        tokio::select! {
            () = serve(listener, Box::new(report), 20, std::future::pending()) => unreachable!(),
            answers = client => {
                for back in answers.unwrap() {
                    assert!(back.starts_with("HTTP/1.1 200 OK\r\n"), "{back:?}");
                    assert!(back.contains("nofail_info"), "{back:?}");
                }
            }
        }
    }
}
