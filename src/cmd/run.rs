//! `msctl run SERVICE [-- COMMAND…]`: a one-off command in the foreground with the environment an
//! instance of the service gets, as `docker compose run`: its `env` and `env_file`, its data
//! folder, the registry (so discovery finds the running system), the supervisor's OTLP receiver
//! when one runs, and a free port. It is no instance: nothing routes to it, and it exits with
//! the command's code.

use crate::cli::RunArgs;
use crate::cmd::Context;
use crate::error::MsctlError;
use crate::running::System;
use crate::supervisor::launch::Launch;
use crate::supervisor::process;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;

pub async fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<u8> {
    let (project, config) = ctx.load()?;
    let service = config
        .services
        .get(&args.service)
        .ok_or_else(|| MsctlError::unknown_service(&args.service, &config))?;
    let port = crate::ports::pick()
        .ok_or_else(|| MsctlError::Io("no free loopback port to give the command".into()))?;
    let otlp = match crate::running::inspect(&project).await {
        Ok(System::Running { registry, .. }) => Some((
            format!("http://{}", registry.supervisor.control),
            registry.supervisor.otlp_token,
        )),
        _ => None,
    };
    let data_dir = project.data_dir(&service.name);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| MsctlError::Io(format!("cannot create {}: {e}", data_dir.display())))?;
    let id = format!("{}{}", service.name, process::RUN_SUFFIX);
    let launch = Launch {
        service,
        id: &id,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        project: &project,
        otlp: otlp.as_ref(),
    };
    let env = launch
        .env(|line| say!("msctl: {line}"))
        .map_err(|e| MsctlError::Usage(format!("service `{}`: {e}", service.name)))?;
    // The command given is run as written: the shell that ran msctl has expanded it already.
    let (program, argv) = match args.command.split_first() {
        Some((program, rest)) => (
            crate::supervisor::instance::find_program(program, &project.root)
                .unwrap_or_else(|| program.into()),
            rest.to_vec(),
        ),
        None => launch
            .program()
            .map_err(|e| MsctlError::Usage(format!("service `{}`: {e}", service.name)))?,
    };
    // In msctl's own process group, so that Ctrl-C at the terminal reaches it as it would
    // reach the command run by hand; and gone with msctl if msctl is killed.
    let mut command = process::command(&program, &argv, &env, &launch.unset(), &project.root);
    command
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().map_err(|e| {
        MsctlError::Usage(crate::supervisor::instance::cannot_run(
            &program,
            &e,
            &project.root,
        ))
    })?;
    let status = wait_forwarding_signals(&mut child).await?;
    Ok(exit_code(&status))
}

/// Waits for the command. Ctrl-C reaches it from the terminal, so msctl only outlives it to
/// pass its code on; a SIGTERM or SIGHUP sent to msctl alone (a CI runner's timeout) is passed
/// on to it.
#[cfg(unix)]
async fn wait_forwarding_signals(
    child: &mut tokio::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    loop {
        let forward = tokio::select! {
            status = child.wait() => return status,
            _ = interrupt.recv() => None,
            _ = quit.recv() => None,
            _ = terminate.recv() => Some(nix::sys::signal::Signal::SIGTERM),
            _ = hangup.recv() => Some(nix::sys::signal::Signal::SIGHUP),
        };
        if let (Some(signal), Some(pid)) = (forward, pid) {
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }
}

#[cfg(not(unix))]
async fn wait_forwarding_signals(
    child: &mut tokio::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    child.wait().await
}

/// The command's exit code, or 128 and the signal that ended it, as a shell reports it.
fn exit_code(status: &std::process::ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return code as u8;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return 128u8.saturating_add(signal as u8);
        }
    }
    1
}
