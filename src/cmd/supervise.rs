//! `msctl supervise` (internal): the detached supervisor that `up -d` starts. It reports start-up
//! events as JSON lines on stdout until the system is ready, then only supervises.

use crate::cli::SuperviseArgs;
use crate::cmd::Context;
use crate::error::MsctlError;
use crate::supervisor::{self, events::Event};
use std::io::Write;

pub async fn supervise(ctx: &Context, args: SuperviseArgs) -> anyhow::Result<u8> {
    // First: `up -d` may stop this supervisor with SIGTERM at any moment of its start.
    let signals = supervisor::signals::Signals::install()
        .map_err(|e| MsctlError::Io(format!("cannot install signal handlers: {e}")))?;
    let (project, mut config) = ctx.load()?;
    config.scale(&args.scale).map_err(MsctlError::Usage)?;
    let (tx, mut rx) = supervisor::events::channel(false);
    let forward = tokio::spawn(async move {
        let mut reporting = true;
        while let Some(event) = rx.recv().await {
            if !reporting || matches!(event, Event::Log { .. }) {
                continue;
            }
            let done = matches!(event, Event::Ready { .. } | Event::Aborted { .. });
            let mut out = std::io::stdout().lock();
            // Once `up -d` has its answer it exits; nothing reads this pipe any more.
            if writeln!(out, "{}", serde_json::to_string(&event).unwrap_or_default())
                .and_then(|_| out.flush())
                .is_err()
                || done
            {
                reporting = false;
            }
        }
    });
    let result = supervisor::run(
        project,
        config,
        args.services,
        supervisor::Options {
            detached: true,
            watch: args.watch,
        },
        tx.clone(),
        signals,
    )
    .await;
    if let Err(e) = &result {
        let (instance, log) = match e {
            MsctlError::Start { instance, log, .. } => (Some(instance.clone()), log.clone()),
            _ => (None, None),
        };
        let message = match e {
            MsctlError::Start { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        tx.send(Event::Aborted {
            message,
            instance,
            log,
            code: Some(e.exit_code()),
        })
        .ok();
    }
    drop(tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), forward).await;
    result?;
    Ok(0)
}
