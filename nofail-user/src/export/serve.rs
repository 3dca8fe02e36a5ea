//! `nofail serve`: Prometheus' pull endpoint. `GET /metrics` renders the
//! live counts (or a recorded report) at scrape time. Loopback by default:
//! the metrics name kernel call sites, which is not for every network.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::{
    attach::Mode,
    cli::parse_duration,
    export::{file, prometheus},
    filter::FilterArgs,
    report::Report,
    session::{Session, Stop},
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
    let mut source = match &args.report {
        Some(path) => Source::Recorded(Box::new(file::read_report(path)?)),
        None => {
            let session = Session::start(&args.filter, args.mode, args.retry_window, |_| Ok(()))?;
            session.tracer.announce();
            Source::Live(Box::new(session), args.stuck_after)
        }
    };
    eprintln!(
        "nofail: serving http://{}/metrics (Ctrl-C to stop)",
        listener.local_addr()?
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // One scrape at a time: reading the maps is quick, and a
                // slow client is cut off by the timeout.
                if let Err(e) = tokio::time::timeout(
                    Duration::from_secs(10),
                    answer(stream, &mut source, args.top as usize),
                ).await.unwrap_or_else(|_| Err(anyhow::anyhow!("client timed out"))) {
                    log::debug!("scrape failed: {e:#}");
                }
            }
            _ = stop.signalled() => break,
        }
    }
    Ok(())
}

/// Reads one request head and answers it; the connection then closes.
async fn answer(mut stream: TcpStream, source: &mut Source, top: usize) -> Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => match source.metrics(top) {
            Ok(body) => respond(&mut stream, "200 OK", prometheus::CONTENT_TYPE, &body).await,
            Err(e) => {
                let body = format!("nofail: cannot read the counts: {e:#}\n");
                respond(
                    &mut stream,
                    "500 Internal Server Error",
                    "text/plain",
                    &body,
                )
                .await
            }
        },
        ("GET", "/") => {
            let body = "nofail: retry-loop metrics at /metrics\n";
            respond(&mut stream, "200 OK", "text/plain", body).await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
        _ => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "only GET\n",
            )
            .await
        }
    }
}

async fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &str) -> Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}
