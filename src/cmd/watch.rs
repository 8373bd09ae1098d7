//! `msctl watch`: turns watch mode on in the running supervisor and prints one line per
//! rebuild until Ctrl-C, which turns it off again (unless it was on before); `-d` leaves it on
//! and returns, `--off` turns it off.

use crate::cli::WatchArgs;
use crate::cmd::Context;
use crate::cmd::logs::{Position, file_id, follow};
use crate::running::{self, System};
use crate::watch::report::{Cycle, Outcome};
use msctl_contract::control::Request;
use std::time::Duration;

/// How often the watch log is read for new cycles.
const POLL: Duration = Duration::from_millis(100);

pub async fn watch(ctx: &Context, args: WatchArgs) -> anyhow::Result<u8> {
    let (project, config) = ctx.load()?;
    let (registry, client) = running::require(&project).await?;
    let limit = Duration::from_secs(30);
    if args.off {
        super::control(
            &project,
            &config,
            &client,
            Request::Watch { on: false },
            limit,
        )
        .await?;
        say!("watching stopped");
        return Ok(0);
    }
    let was_on = registry.supervisor.watching;
    let log = project.watch_log();
    // Only cycles from now on: the log keeps earlier ones.
    let mut position = Position {
        offset: std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0),
        file: file_id(&log),
    };
    super::control(
        &project,
        &config,
        &client,
        Request::Watch { on: true },
        limit,
    )
    .await?;
    if args.detach {
        say!("watching for changes; `msctl watch --off` stops it");
        return Ok(0);
    }
    say!(
        "watching {} for changes; Ctrl-C stops{}",
        project.root.display(),
        if was_on {
            " following (watching stays on)"
        } else {
            ""
        }
    );
    let result = print_cycles(&project, &log, &mut position, args.json).await;
    if !was_on && matches!(running::inspect(&project).await, Ok(System::Running { .. })) {
        let _ = super::control(
            &project,
            &config,
            &client,
            Request::Watch { on: false },
            limit,
        )
        .await;
    }
    result
}

/// Prints each cycle the supervisor appends to the watch log, until Ctrl-C, SIGTERM, the
/// system stopping, or the reader of stdout going away.
async fn print_cycles(
    project: &crate::project::Project,
    log: &std::path::Path,
    position: &mut Position,
    json: bool,
) -> anyhow::Result<u8> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        for line in follow(log, position) {
            let Ok(cycle) = serde_json::from_str::<Cycle>(&line) else {
                continue;
            };
            if json {
                outln!("{line}")?;
            } else {
                let mark = match cycle.outcome {
                    Outcome::Replaced | Outcome::Applied => console::style("✔").green(),
                    _ => console::style("✘").red(),
                };
                outln!("{mark} {}", cycle.line())?;
            }
        }
        if !project.registry().exists() {
            say!("the system stopped");
            return Ok(0);
        }
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
            _ = term.recv() => return Ok(0),
        }
        #[cfg(not(unix))]
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
        if crate::output::reader_gone() {
            return Ok(0);
        }
    }
}
