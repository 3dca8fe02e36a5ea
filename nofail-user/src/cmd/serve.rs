// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail serve`: its flags, and the live session (or recorded report)
//! handed to the HTTP endpoint in output/serve.rs.

use std::{borrow::Cow, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use tokio::net::TcpListener;

use crate::{
    bpf::{session::Session, tracer::Globals},
    cmd::flags::{FilterArgs, LiveArgs, TopArgs},
    cmd::signals::Stop,
    kernel::duration_ns,
    model::{report::Report, source::ReportSource},
    output::{json, serve::serve},
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
    /// Serve this recorded report instead of tracing live (the flags of
    /// live tracing, which could change nothing in it, are refused).
    #[arg(long, conflicts_with_all = LIVE_ONLY)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub top: TopArgs,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// The flags of a live session (how calls are followed, what is selected,
/// map sizes): a recorded report was taken with its own.
const LIVE_ONLY: [&str; 13] = [
    "mode",
    "stuck_after",
    "retry_window",
    "what_if",
    "pid",
    "comm",
    "caller",
    "module",
    "nofail_only",
    "min_size",
    "chains",
    "max_callers",
    "max_inflight",
];

pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let s = s
        .strip_prefix("localhost:")
        .map_or_else(|| s.to_string(), |port| format!("127.0.0.1:{port}"));
    s.parse()
        .map_err(|_| format!("invalid listen address {s:?} (try 127.0.0.1:9464 or [::1]:9464)"))
}

/// The counts of an attached session, read at scrape time.
struct Live {
    session: Session,
    stuck_after: Duration,
}

impl ReportSource for Live {
    fn report(&mut self) -> Result<Cow<'_, Report>> {
        Ok(Cow::Owned(self.session.collect("serve", self.stuck_after)?))
    }

    fn tick(&mut self) {
        // Name call sites while their code is there.
        let _ = self.session.learn_names();
    }
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let mut stop = Stop::listen()?;
    args.live.check()?;
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
    let source: Box<dyn ReportSource> = match &args.report {
        Some(path) => Box::new(json::read_report(path)?),
        None => {
            let session = Session::start(
                &args.filter.selection(),
                args.live.mode,
                Globals {
                    retry_window_ns: duration_ns(args.live.retry_window),
                    what_if: args.live.what_if,
                    ..Default::default()
                },
                |_| Ok(()),
            )?;
            session.tracer.announce();
            Box::new(Live {
                session,
                stuck_after: args.live.stuck_after,
            })
        }
    };
    eprintln!(
        "nofail: serving http://{}/metrics (Ctrl-C to stop)",
        listener.local_addr()?
    );
    args.live.ready()?;
    serve(listener, source, args.top.top as usize, stop.signalled()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// `LIVE_ONLY` names every flag of `serve` but those a served report
    /// honours too: a flag added to serve is refused with `--report` or
    /// listed here as one that applies to it, or this fails.
    #[test]
    fn every_live_flag_conflicts_with_report() {
        const WITH_REPORT: [&str; 6] = [
            "listen",
            "allow_remote",
            "report",
            "top",
            "ready_file",
            "help",
        ];
        let cli = crate::cmd::Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let mut live: Vec<String> = serve
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|a| !WITH_REPORT.contains(&a.as_str()))
            .collect();
        live.sort();
        let mut listed: Vec<String> = LIVE_ONLY.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(live, listed);
    }
}
