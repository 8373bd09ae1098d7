//! What is running for a project: nothing, a live supervisor, or what a dead one left behind.

use crate::error::MsctlError;
use crate::project::Project;
use crate::supervisor::control::ControlClient;
use crate::supervisor::process;
use msctl_kit::registry::{self, Registry, RegistryError};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub enum System {
    NotRunning,
    Running { registry: Registry, control: ControlClient },
    /// The registry names a supervisor that no longer answers.
    Stale { registry: Registry },
}

/// How long a live supervisor has to answer a ping.
const PING_TIMEOUT: Duration = Duration::from_millis(1500);

pub async fn inspect(project: &Project) -> Result<System, MsctlError> {
    let registry = match registry::read(&project.registry()) {
        Ok(r) => r,
        Err(RegistryError::Missing(_)) => return Ok(System::NotRunning),
        Err(e) => return Err(MsctlError::Unreachable(format!("{e}; if nothing runs, delete it"))),
    };
    let control = ControlClient::new(&registry);
    if control.ping(PING_TIMEOUT).await {
        Ok(System::Running { registry, control })
    } else {
        Ok(System::Stale { registry })
    }
}

/// The live supervisor, or the error a command that needs one reports.
pub async fn require(project: &Project) -> Result<(Registry, ControlClient), MsctlError> {
    match inspect(project).await? {
        System::Running { registry, control } => Ok((registry, control)),
        System::NotRunning => Err(MsctlError::NotRunning(project.root.clone())),
        System::Stale { registry } => Err(MsctlError::Unreachable(format!(
            "the supervisor (pid {}) is gone; run `msctl down` to clean up what it left",
            registry.supervisor.pid
        ))),
    }
}

/// Stops the instances a dead supervisor left running and removes its registry. Only processes
/// that are still those instances are touched. Returns the instances stopped.
pub async fn clean_stale(project: &Project, registry: &Registry) -> Vec<String> {
    let path = project.registry();
    let mut left: Vec<(String, u32)> = Vec::new();
    for entry in registry.services.values() {
        for instance in &entry.instances {
            if let Some(pid) = instance.pid.filter(|pid| process::alive(*pid) && process::is_instance(*pid, &instance.id, &path)) {
                #[cfg(unix)]
                process::signal_group(pid, nix::sys::signal::Signal::SIGTERM);
                left.push((instance.id.clone(), pid));
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while left.iter().any(|(_, pid)| process::alive(*pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (_, pid) in &left {
        #[cfg(unix)]
        process::signal_group(*pid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(&path);
    left.into_iter().map(|(id, _)| id).collect()
}
