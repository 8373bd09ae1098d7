//! The build step of `up`: each distinct build command once, output to a log shown in full on failure.

use crate::config::{Service, expand_vars};
use crate::error::MsctlError;
use crate::project::Project;
use crate::supervisor::process::{die_with_parent, signal_group};
use crate::supervisor::signals::Signals;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long a build step stopped by a signal has to end before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs the build commands of `services`, once per distinct command, in order. A signal to msctl
/// stops the build in progress, with everything it started, and ends the run.
pub async fn run(
    project: &Project,
    services: &[&crate::config::Service],
    signals: &mut Signals,
) -> Result<(), MsctlError> {
    let mut builds: Vec<Vec<String>> = Vec::new();
    for build in services.iter().filter_map(|s: &&Service| s.build.clone()) {
        if !builds.contains(&build) {
            builds.push(build);
        }
    }
    if builds.is_empty() {
        return Ok(());
    }
    project
        .create_state_dirs()
        .map_err(|e| MsctlError::Io(format!("cannot create {}: {e}", project.state.display())))?;
    let log_path = project.build_log();
    let log = msctl_contract::fs::open_private(&log_path, false)
        .map_err(|e| MsctlError::Io(format!("cannot write {}: {e}", log_path.display())))?;
    for argv in builds {
        let argv: Vec<String> = argv
            .iter()
            .map(|a| expand_vars(a, |k| std::env::var(k).ok()))
            .collect::<Result<_, _>>()
            .map_err(MsctlError::Usage)?;
        let shown = argv.join(" ");
        let bar = if crate::progress::stderr_is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed}")
                    .expect("template is valid"),
            );
            bar.set_message(format!("building: {shown}"));
            bar.enable_steady_tick(Duration::from_millis(80));
            Some(bar)
        } else {
            say!("building: {shown}");
            None
        };
        let started = Instant::now();
        let out = log.try_clone().map_err(|e| MsctlError::Io(e.to_string()))?;
        let err = log.try_clone().map_err(|e| MsctlError::Io(e.to_string()))?;
        let mut command = tokio::process::Command::new(&argv[0]);
        crate::supervisor::process::forget_cargo_run(&mut command);
        command
            .args(&argv[1..])
            .current_dir(&project.root)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // A group of its own, so that the whole build (cargo and its rustc) can be stopped
        // when msctl is, even by a signal sent to msctl alone (`kill`, a process manager).
        #[cfg(unix)]
        {
            command.process_group(0);
            die_with_parent(&mut command);
        }
        let status = match command.spawn() {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                tokio::select! {
                    status = child.wait() => status,
                    signal = signals.next() => {
                        if let Some(bar) = &bar {
                            bar.finish_and_clear();
                        }
                        say!("msctl: {signal}; stopping the build");
                        stop(pid, &mut child).await;
                        return Err(MsctlError::Interrupted {
                            cause: format!("msctl got {signal}"),
                            during: format!("while `{shown}` ran"),
                            undone: format!(
                                "the build was stopped, nothing was started (its output so far is in {})",
                                log_path.display()
                            ),
                        });
                    }
                }
            }
            Err(e) => Err(e),
        };
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        let status = match status {
            Ok(s) if s.success() => {
                say!(
                    "{} built in {:.1} s: {shown}",
                    console::style("✔").green().for_stderr(),
                    started.elapsed().as_secs_f64()
                );
                continue;
            }
            Ok(s) => crate::supervisor::process::describe_exit(&s),
            Err(e) => format!("could not run: {e}"),
        };
        return Err(MsctlError::Build {
            command: shown,
            status,
            log: log_path,
        });
    }
    Ok(())
}

/// Stops a build's process group: SIGTERM, then SIGKILL after `STOP_GRACE`.
async fn stop(pid: u32, child: &mut tokio::process::Child) {
    #[cfg(unix)]
    signal_group(pid, nix::sys::signal::Signal::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        #[cfg(unix)]
        signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // What the leader left in its group (a shell's `sleep`, cargo's rustc) goes with it.
    #[cfg(unix)]
    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
}
