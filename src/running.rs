//! What is running for a project: nothing, a live supervisor, or what a dead one left behind.

use crate::error::MsctlError;
use crate::project::Project;
use crate::supervisor::control::ControlClient;
use crate::supervisor::process;
use msctl_contract::registry::{self, Registry, RegistryError};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub enum System {
    NotRunning,
    Running {
        registry: Registry,
        control: ControlClient,
    },
    /// The registry names a supervisor that is gone.
    Stale {
        registry: Registry,
    },
    /// The supervisor's process lives but its control API does not answer (it may be stopped
    /// or overloaded). Its instances are not touched.
    Unresponsive {
        registry: Registry,
    },
}

/// How long a live supervisor has to answer a ping.
const PING_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long a command waits for a live supervisor's registry to come back: it writes it again
/// within half a second of its deletion.
const RESTORE_WAIT: Duration = Duration::from_millis(1500);

pub async fn inspect(project: &Project) -> Result<System, MsctlError> {
    let mut waited = None;
    let registry = loop {
        let read = registry::read(&project.registry());
        // No registry (or a spoiled one), but the lock names a live msctl: one starting, or one
        // whose registry was deleted or overwritten under it and is about to be written again.
        if read.is_err()
            && lock_holder(project).is_some()
            && waited.get_or_insert_with(Instant::now).elapsed() < RESTORE_WAIT
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        match read {
            Ok(r) => break r,
            Err(RegistryError::Missing(_)) => return Ok(System::NotRunning),
            // Something else has the name of msctl's state folder: no msctl can have run here.
            Err(_) if project.state.exists() && !project.state.is_dir() => {
                return Err(MsctlError::Io(format!(
                    "{} is a file, where msctl keeps the running system's state (a folder); move it away or delete it",
                    project.state.display()
                )));
            }
            Err(e) => {
                return Err(MsctlError::Io(format!("{e}; if nothing runs, delete it")));
            }
        }
    };
    let control = ControlClient::new(&registry);
    if let Some(registry_error) = control.ping(PING_TIMEOUT).await {
        if let Some(e) = registry_error {
            say!(
                "{} the supervisor {e}",
                console::style("warning:").yellow().bold().for_stderr()
            );
        }
        Ok(System::Running { registry, control })
    } else if is_supervisor(registry.supervisor.pid) {
        Ok(System::Unresponsive { registry })
    } else {
        Ok(System::Stale { registry })
    }
}

/// The live msctl whose pid the project's lock file holds, if any.
fn lock_holder(project: &Project) -> Option<u32> {
    std::fs::read_to_string(project.lock())
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id() && is_supervisor(*pid) && supervises(*pid))
}

/// Whether `pid` is an msctl that runs a system (`up`, or the detached `supervise`), rather than
/// another command that happens to have the pid the lock file still names.
fn supervises(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        process::Proc { pid }
            .cmdline()
            .iter()
            .skip(1)
            .any(|arg| arg == "up" || arg == "supervise")
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        true
    }
}

/// Whether `pid` is a live msctl process: a pid reused by anything else is not.
fn is_supervisor(pid: u32) -> bool {
    if !process::alive(pid) {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        process::Proc { pid }
            .cmdline()
            .first()
            .is_some_and(|exe| exe.contains("msctl"))
    }
    #[cfg(not(target_os = "linux"))]
    true
}

/// The live supervisor, or the error a command that needs one reports.
pub async fn require(project: &Project) -> Result<(Registry, ControlClient), MsctlError> {
    match inspect(project).await? {
        System::Running { registry, control } => Ok((registry, control)),
        System::Unresponsive { registry } => Err(unresponsive(&registry)),
        other => Err(not_running(project, &other)),
    }
}

/// The one error for "nothing runs" (exit 6), whether nothing was started or its supervisor died.
pub fn not_running(project: &Project, system: &System) -> MsctlError {
    match system {
        System::Stale { registry } => MsctlError::Gone(format!(
            "nothing is running: the supervisor (pid {}) is gone; run `msctl down` to clean up what it left",
            registry.supervisor.pid
        )),
        _ => MsctlError::NotRunning(project.root.clone()),
    }
}

/// Stops what a dead supervisor left running and removes its registry: the instances, and on
/// Linux whatever they started, found by the registry path in their environment so that nothing
/// unrelated (a process that reused a pid) is touched. Returns the instances stopped.
pub async fn clean_stale(project: &Project, registry: &Registry) -> Vec<String> {
    let path = project.registry();
    let left = leftovers(&path, registry);
    for (pid, _) in &left {
        #[cfg(unix)]
        process::signal_group(*pid, nix::sys::signal::Signal::SIGTERM);
        #[cfg(unix)]
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while left.iter().any(|(pid, _)| process::alive(*pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (pid, _) in &left {
        #[cfg(unix)]
        process::signal_group(*pid, nix::sys::signal::Signal::SIGKILL);
        #[cfg(unix)]
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = std::fs::remove_file(&path);
    let mut instances: Vec<String> = left
        .into_iter()
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty())
        .collect();
    instances.sort();
    instances.dedup();
    instances
}

#[cfg(target_os = "linux")]
fn leftovers(path: &std::path::Path, _: &Registry) -> Vec<(u32, String)> {
    process::started_for(path)
}

#[cfg(not(target_os = "linux"))]
fn leftovers(path: &std::path::Path, registry: &Registry) -> Vec<(u32, String)> {
    registry
        .services
        .values()
        .flat_map(|s| s.instances.iter())
        .filter_map(|i| {
            i.pid
                .filter(|pid| process::alive(*pid) && process::is_instance(*pid, &i.id, path))
                .map(|pid| (pid, i.id.clone()))
        })
        .collect()
}

/// The error for a supervisor that lives but does not answer.
pub fn unresponsive(registry: &Registry) -> MsctlError {
    MsctlError::Unreachable(format!(
        "the supervisor (pid {}) runs but does not answer on {}; `msctl down` asks it to stop with SIGTERM",
        registry.supervisor.pid, registry.supervisor.control
    ))
}
