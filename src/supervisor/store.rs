//! The registry as the supervisor keeps it: in memory, and written through to the file atomically
//! on every change, so the file reflects reality at all times.

use msctl_contract::registry::{
    self, Instance, InstanceState, Registry, Supervisor, SupervisorPhase,
};
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Debug)]
pub struct RegistryStore {
    path: PathBuf,
    registry: Mutex<Registry>,
    /// Set once the file is removed for good (msctl stops): it is never written again.
    removed: std::sync::atomic::AtomicBool,
    /// Why the last write failed, until one succeeds: said once when it starts and once when it
    /// ends rather than at every try, and given to every command through the ping.
    write_error: Mutex<Option<String>>,
}

impl RegistryStore {
    pub fn create(path: PathBuf, supervisor: Supervisor) -> std::io::Result<Self> {
        let registry = Registry {
            version: registry::REGISTRY_VERSION,
            supervisor,
            services: Default::default(),
        };
        registry::write(&path, &registry)?;
        Ok(Self {
            path,
            registry: Mutex::new(registry),
            removed: Default::default(),
            write_error: Default::default(),
        })
    }

    /// Adds or replaces `instance` under `service`, and writes the file.
    pub fn upsert(&self, service: &str, instance: Instance) {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let entry = reg.services.entry(service.to_string()).or_default();
        match entry.instances.iter_mut().find(|i| i.id == instance.id) {
            Some(existing) => *existing = instance,
            None => {
                entry.instances.push(instance);
                entry.instances.sort_by_key(|i| natural_key(&i.id));
            }
        }
        // Written under the lock, so the file never goes back to an older state.
        self.write(&reg);
    }

    /// Marks `id` stopping ahead of its stop, so that callers, which read the registry on every
    /// call, send it nothing new while it still answers what it holds. `false` when it is not
    /// registered as healthy (nothing to take out of rotation).
    pub fn mark_stopping(&self, service: &str, id: &str) -> bool {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let Some(instance) = reg
            .services
            .get_mut(service)
            .and_then(|e| e.instances.iter_mut().find(|i| i.id == id))
            .filter(|i| i.state == msctl_contract::registry::InstanceState::Healthy)
        else {
            return false;
        };
        instance.state = msctl_contract::registry::InstanceState::Stopping;
        self.write(&reg);
        true
    }

    /// Takes a retired instance out of the registry, and writes the file.
    pub fn remove_instance(&self, service: &str, id: &str) {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = reg.services.get_mut(service) {
            entry.instances.retain(|i| i.id != id);
        }
        self.write(&reg);
    }

    /// Takes a service that left msctl.toml out of the registry, and writes the file.
    pub fn remove_service(&self, service: &str) {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.services.remove(service);
        self.write(&reg);
    }

    /// Records whether watch mode is on, and writes the file.
    pub fn set_watching(&self, on: bool) {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.supervisor.watching = on;
        self.write(&reg);
    }

    /// Records (or clears) a failed rebuild of `service`, and writes the file.
    pub fn set_build_failed(&self, service: &str, failure: Option<registry::BuildFailure>) {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let entry = reg.services.entry(service.to_string()).or_default();
        if entry.build_failed != failure {
            entry.build_failed = failure;
            self.write(&reg);
        }
    }

    pub fn phase(&self) -> SupervisorPhase {
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.supervisor.phase
    }

    /// Records whether the system is starting, ready, or stopping, and writes the file.
    pub fn set_phase(&self, phase: SupervisorPhase) {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.supervisor.phase = phase;
        self.write(&reg);
    }

    /// For a forced stop: every instance that had a process is marked stopped, so that no
    /// reader takes a killed instance for a live one. Returns the pids that ran.
    pub fn mark_all_killed(&self) -> Vec<u32> {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut pids = Vec::new();
        for entry in reg.services.values_mut() {
            for i in &mut entry.instances {
                if let Some(pid) = i.pid.take() {
                    pids.push(pid);
                }
                i.state = InstanceState::Stopped;
                i.reason = Some("killed: msctl was interrupted twice".into());
            }
        }
        reg.supervisor.phase = SupervisorPhase::Stopping;
        self.write(&reg);
        pids
    }

    /// Writes `reg` to the file; `false` if it could not be.
    fn write(&self, reg: &Registry) -> bool {
        let result = registry::write(&self.path, reg);
        let mut error = self.write_error.lock().unwrap_or_else(|e| e.into_inner());
        match (result, error.is_some()) {
            (Ok(()), false) => true,
            (Ok(()), true) => {
                *error = None;
                say!(
                    "msctl: the registry {} is written again",
                    self.path.display()
                );
                true
            }
            (Err(e), was_failing) => {
                let message = describe_write_error(&self.path, &e);
                if !was_failing {
                    say!("msctl: {message}");
                }
                *error = Some(message);
                false
            }
        }
    }

    /// Why the registry cannot be written, while it cannot.
    pub fn write_error(&self) -> Option<String> {
        self.write_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn snapshot(&self) -> Registry {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Writes the file again when it is gone or not what msctl wrote while msctl runs (`.msctl/`
    /// or the file deleted by hand, a `git clean`, an editor's stray save): every command and
    /// every service finds the system through it, and without it `msctl down` would find nothing
    /// to stop. `true` when it was written.
    pub fn restore_if_changed(&self) -> bool {
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let failing = self.write_error().is_some();
        if self.is_removed() || (!failing && self.on_disk_is(&reg)) {
            return false;
        }
        // After a failed write (a full disk) it is tried again here too, which is no change
        // made by hand.
        self.write(&reg) && !failing
    }

    /// Whether the file holds what msctl last wrote (or msctl has removed it for good).
    pub fn is_current(&self) -> bool {
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        self.is_removed() || self.on_disk_is(&reg)
    }

    fn on_disk_is(&self, reg: &Registry) -> bool {
        registry::read(&self.path).is_ok_and(|on_disk| on_disk == *reg)
    }

    /// Whether the file was removed for good.
    pub fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Removes the file: nothing runs any more.
    pub fn remove(&self) {
        // Under the lock, so that a restore cannot bring it back after.
        let _reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        self.removed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A failed write of the registry, said so that the fix is plain: a full disk is the usual cause.
fn describe_write_error(path: &std::path::Path, e: &std::io::Error) -> String {
    let fix = if e.raw_os_error() == Some(28) {
        "; free space on the disk that holds it: until then callers do not see instances started or stopped, and `msctl ps` shows what ran before"
    } else {
        ""
    };
    format!("cannot write the registry {}: {e}{fix}", path.display())
}

/// `users-10` sorts after `users-9`.
fn natural_key(id: &str) -> (String, u64) {
    match id.rsplit_once('-') {
        Some((name, n)) => (name.to_string(), n.parse().unwrap_or(0)),
        None => (id.to_string(), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_named_with_its_fix() {
        let path = std::path::Path::new("/p/.msctl/registry.json");
        let full = describe_write_error(path, &std::io::Error::from_raw_os_error(28));
        assert!(
            full.starts_with(
                "cannot write the registry /p/.msctl/registry.json: No space left on device"
            ) && full.contains("free space on the disk that holds it"),
            "{full}"
        );
        let other = describe_write_error(path, &std::io::Error::from_raw_os_error(21));
        assert!(!other.contains("free space"), "{other}");
    }
}
