//! The registry file (DESIGN.md): one shared definition for msctl, which writes it, and the
//! services, which read it to find their peers.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub const REGISTRY_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    pub version: u32,
    pub supervisor: Supervisor,
    /// Per service, in name order so the file diffs well.
    pub services: BTreeMap<String, ServiceEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Supervisor {
    pub pid: u32,
    /// Loopback address of the supervisor's control API.
    pub control: String,
    /// The folder holding msctl.toml.
    pub project: String,
    pub started_at_ms: u64,
    /// Foreground (`msctl up`) or detached (`msctl up -d`).
    pub detached: bool,
    /// Required by the control API; the registry is readable by its owner only.
    #[serde(default)]
    pub token: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceEntry {
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Starting,
    Healthy,
    Unhealthy,
    Stopped,
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Stopped => "stopped",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    /// `None` while no process runs (stopped, or waiting to restart).
    pub pid: Option<u32>,
    /// `host:port` on loopback.
    pub address: String,
    pub state: InstanceState,
    pub started_at_ms: u64,
    pub restarts: u32,
    /// The last health probe, in words (`200 in 3 ms`, `connection refused`).
    #[serde(default)]
    pub last_health: Option<String>,
    /// Why the instance is not running, when it is not (`exited with code 1`, `restart limit reached`).
    #[serde(default)]
    pub reason: Option<String>,
}

impl Registry {
    pub fn healthy_addresses(&self, service: &str) -> Vec<(String, String)> {
        self.services
            .get(service)
            .map(|s| {
                s.instances
                    .iter()
                    .filter(|i| i.state == InstanceState::Healthy)
                    .map(|i| (i.id.clone(), i.address.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no registry at {0}: nothing is running here")]
    Missing(String),
    #[error("cannot read the registry {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the registry {path} is not valid registry JSON: {source}")]
    Invalid {
        path: String,
        source: serde_json::Error,
    },
    #[error("the registry {path} has version {found}; this build reads version {REGISTRY_VERSION}")]
    Version { path: String, found: u32 },
}

/// Reads and checks the registry at `path`.
pub fn read(path: &Path) -> Result<Registry, RegistryError> {
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RegistryError::Missing(shown));
        }
        Err(source) => {
            return Err(RegistryError::Io {
                path: shown,
                source,
            });
        }
    };
    let reg: Registry =
        serde_json::from_slice(&bytes).map_err(|source| RegistryError::Invalid {
            path: shown.clone(),
            source,
        })?;
    if reg.version != REGISTRY_VERSION {
        return Err(RegistryError::Version {
            path: shown,
            found: reg.version,
        });
    }
    Ok(reg)
}

/// Writes the registry atomically: a temporary file beside it, then a rename, so a reader sees
/// either the old file or the new one, never half of one. Only the owner may read it.
pub fn write(path: &Path, registry: &Registry) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("registry.json"),
        std::process::id()
    ));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        let json = serde_json::to_vec_pretty(registry).map_err(std::io::Error::other)?;
        file.write_all(&json)?;
        file.write_all(b"\n")?;
    }
    std::fs::rename(&tmp, path)
}

/// An instance at `127.0.0.1:port`, for tests.
#[cfg(test)]
pub(crate) fn instance(id: &str, port: u16, state: InstanceState) -> Instance {
    Instance {
        id: id.into(),
        pid: Some(1),
        address: format!("127.0.0.1:{port}"),
        state,
        started_at_ms: 0,
        restarts: 0,
        last_health: None,
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        assert!(matches!(read(&path), Err(RegistryError::Missing(_))));
        let mut reg = Registry {
            version: 1,
            ..Default::default()
        };
        reg.services.insert(
            "users".into(),
            ServiceEntry {
                instances: vec![instance("users-1", 4000, InstanceState::Healthy)],
            },
        );
        write(&path, &reg).unwrap();
        assert_eq!(read(&path).unwrap(), reg);
        assert_eq!(
            reg.healthy_addresses("users"),
            vec![("users-1".into(), "127.0.0.1:4000".into())]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn rejects_other_versions_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(read(&path), Err(RegistryError::Invalid { .. })));
        let reg = Registry {
            version: 9,
            ..Default::default()
        };
        std::fs::write(&path, serde_json::to_string(&reg).unwrap()).unwrap();
        assert!(matches!(
            read(&path),
            Err(RegistryError::Version { found: 9, .. })
        ));
    }
}
