//! `msctl down`: stops everything gracefully and frees every port; with nothing up, says so.

use crate::cmd::Context;
use crate::running::{self, System};
use crate::supervisor::process;
use msctl_contract::control::Request;
use std::time::{Duration, Instant};

/// How long `down` waits for the supervisor process to exit after it has stopped the services.
const EXIT_WAIT: Duration = Duration::from_secs(10);

pub async fn down(ctx: &Context) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    match running::inspect(&project).await? {
        System::NotRunning => {
            say!("nothing is running in {}", project.root.display());
        }
        System::Stale { registry } => {
            let cleaned = running::clean_stale(&project, &registry).await;
            say!(
                "the supervisor (pid {}) had died; stopped {} instance(s) it left: {}",
                registry.supervisor.pid,
                cleaned.len(),
                if cleaned.is_empty() {
                    "none".to_string()
                } else {
                    cleaned.join(", ")
                }
            );
        }
        System::Unresponsive { registry } => {
            // SIGTERM is the supervisor's own shutdown path: it stops everything in order.
            let pid = registry.supervisor.pid;
            say!("the supervisor (pid {pid}) does not answer; sending it SIGTERM");
            #[cfg(unix)]
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + EXIT_WAIT;
            while process::alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if process::alive(pid) {
                #[cfg(unix)]
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let cleaned = running::clean_stale(&project, &registry).await;
            say!("stopped; {} instance(s) had to be killed", cleaned.len());
        }
        System::Running { registry, control } => {
            let count: usize = registry
                .services
                .values()
                .map(|s| s.instances.iter().filter(|i| i.pid.is_some()).count())
                .sum();
            // Stopping takes each level's longest stop_timeout; a broken msctl.toml must not keep
            // `down` from working, so it falls back to a fixed limit.
            let limit = ctx
                .load()
                .map(|(_, config)| {
                    config
                        .services
                        .values()
                        .map(|s| s.stop_timeout)
                        .sum::<Duration>()
                        + EXIT_WAIT
                })
                .unwrap_or(Duration::from_secs(60));
            // The supervisor may go before its answer arrives; its exit is what counts.
            let _ = control.send(&Request::Down, limit).await;
            let deadline = Instant::now() + EXIT_WAIT;
            while process::alive(registry.supervisor.pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            say!("stopped {count} instance(s)");
        }
    }
    Ok(0)
}
