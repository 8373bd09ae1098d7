//! The build step of `up`: each distinct build command once, output to a log shown in full on failure.

use crate::config::{Service, expand_vars};
use crate::error::MsctlError;
use crate::project::Project;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Runs the build commands of `services`, once per distinct command, in order.
pub async fn run(
    project: &Project,
    services: &[&crate::config::Service],
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
        let status = command
            .args(&argv[1..])
            .current_dir(&project.root)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .await;
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
