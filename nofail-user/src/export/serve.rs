// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail serve`: Prometheus' pull endpoint. `GET /metrics` renders the
//! live counts (or a recorded report) at scrape time. Loopback by default:
//! the metrics name kernel call sites, which is not for every network.
//! HTTP is hyper's: connections are served concurrently with keep-alive,
//! a deadline and a size bound for each request head, and a bound on open
//! connections, so idle or hostile clients cannot hold up a scrape.

use std::{
    cell::{Cell, RefCell},
    net::SocketAddr,
    path::PathBuf,
    rc::Rc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::{
    attach::Mode,
    cli::parse_duration,
    export::{file, prometheus},
    filter::FilterArgs,
    report::Report,
    session::{Session, Stop},
    tracer::Globals,
};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (host:port). Non-loopback addresses need
    /// --allow-remote.
    #[arg(long, default_value = "127.0.0.1:9464", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Accept a listen address other than loopback.
    #[arg(long)]
    pub allow_remote: bool,
    /// Serve this recorded report instead of tracing live.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Callers with their own label; the rest are summed as caller="other".
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub top: u64,
    /// Attach mode (live tracing).
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Calls older than this count as stuck (live tracing).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub stuck_after: Duration,
    /// A call from the same site and task within this long after a NULL
    /// counts as an open-coded retry (live tracing).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub retry_window: Duration,
}

pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let s = s
        .strip_prefix("localhost:")
        .map_or_else(|| s.to_string(), |port| format!("127.0.0.1:{port}"));
    s.parse()
        .map_err(|_| format!("invalid listen address {s:?} (try 127.0.0.1:9464 or [::1]:9464)"))
}

/// Where the metrics come from.
enum Source {
    Live(Box<Session>, Duration),
    Recorded(Box<Report>),
}

impl Source {
    fn metrics(&mut self, top: usize) -> Result<String> {
        Ok(match self {
            Source::Live(session, stuck_after) => {
                prometheus::render(&session.collect("serve", *stuck_after)?, top)
            }
            Source::Recorded(report) => prometheus::render(report, top),
        })
    }
}

/// Request heads must arrive within this long (a half-sent request line
/// cannot hold a connection), and be at most this large.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Connections served at once; beyond it new ones are closed at accept.
const MAX_CONNECTIONS: usize = 256;

pub async fn run(args: ServeArgs) -> Result<()> {
    let mut stop = Stop::listen()?;
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        bail!(
            "refusing to serve on {} (not loopback): the metrics name kernel call sites; pass --allow-remote if that is intended",
            args.listen
        );
    }
    // Bound before anything is attached: a port in use costs nothing.
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let source = match &args.report {
        Some(path) => Source::Recorded(Box::new(file::read_report(path)?)),
        None => {
            let session = Session::start(
                &args.filter,
                args.mode,
                Globals {
                    retry_window_ns: args.retry_window.as_nanos() as u64,
                    ..Default::default()
                },
                |_| Ok(()),
            )?;
            session.tracer.announce();
            Source::Live(Box::new(session), args.stuck_after)
        }
    };
    eprintln!(
        "nofail: serving http://{}/metrics (Ctrl-C to stop)",
        listener.local_addr()?
    );
    // Connections are served concurrently on this thread; a scrape reads
    // the maps synchronously under the RefCell, so scrapes never overlap.
    let source = Rc::new(RefCell::new(source));
    let top = args.top as usize;
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let open = Rc::new(Cell::new(0usize));
            let mut naming = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = naming.tick() => {
                        // Name call sites while their code is there.
                        if let Source::Live(session, _) = &mut *source.borrow_mut() {
                            let _ = session.learn_names();
                        }
                    }
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        if open.get() >= MAX_CONNECTIONS {
                            drop(stream);
                            continue;
                        }
                        open.set(open.get() + 1);
                        let (source, open) = (source.clone(), open.clone());
                        tokio::task::spawn_local(async move {
                            serve_connection(stream, source, top).await;
                            open.set(open.get() - 1);
                        });
                    }
                    _ = stop.signalled() => break,
                }
            }
        })
        .await;
    Ok(())
}

/// One connection: HTTP/1.1 with keep-alive, as Prometheus scrapes.
async fn serve_connection(stream: TcpStream, source: Rc<RefCell<Source>>, top: usize) {
    let service = service_fn(move |req: Request<Incoming>| {
        let response = answer(&req, &source, top);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_DEADLINE)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    // A client that goes away or times out ends only its own connection.
    let _ = conn.await;
}

fn answer(req: &Request<Incoming>, source: &RefCell<Source>, top: usize) -> Response<Full<Bytes>> {
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
        "/metrics" => match source.borrow_mut().metrics(top) {
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
