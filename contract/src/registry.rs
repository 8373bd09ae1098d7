//! The registry file (docs/registry.md, docs/registry.schema.json): msctl writes it, the services
//! read it to find their peers, and the other msctl commands read it to find the supervisor.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// Whether the system is still starting, serving, or shutting down.
    #[serde(default)]
    pub phase: SupervisorPhase,
    /// The bearer token of the OTLP receiver at `control` (`/v1/traces`, `/v1/logs`); every
    /// instance is given it in `OTEL_EXPORTER_OTLP_HEADERS`.
    #[serde(default)]
    pub otlp_token: String,
    /// Whether the supervisor rebuilds and replaces services when their files change
    /// (`msctl up --watch`, `msctl watch`).
    #[serde(default)]
    pub watching: bool,
    /// The web dashboard's session token, at `http://<control>/?token=…` (`msctl dashboard`).
    #[serde(default)]
    pub dashboard_token: String,
}

impl Supervisor {
    /// The dashboard's address with its token, to open once: the page then keeps the token in
    /// its origin's storage and drops it from the address.
    pub fn dashboard_url(&self) -> String {
        format!("http://{}/?token={}", self.control, self.dashboard_token)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SupervisorPhase {
    /// The first `up` has not finished: another `up` must not start anything.
    #[default]
    Starting,
    /// Start-up finished; the supervisor takes `start`, `stop` and `restart`.
    Ready,
    /// Everything is being stopped.
    Stopping,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceEntry {
    pub instances: Vec<Instance>,
    /// Set while the last rebuild of this service under watch failed; its running instances
    /// keep serving the code built before. Cleared by the next build that succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_failed: Option<BuildFailure>,
}

/// A failed rebuild: the compiler's first error, with file and line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildFailure {
    /// `services/users/src/lib.rs:12:5: error[E0308]: mismatched types`
    pub error: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Starting,
    Healthy,
    Unhealthy,
    /// Draining: marked before SIGTERM is sent, so that callers stop choosing it first.
    Stopping,
    /// Exited or unhealthy, waiting before the next start.
    Restarting,
    Stopped,
    /// A job (`job = true`) that ran to its end and exited 0.
    Completed,
    /// Could not start, or crashed more often than allowed; left down.
    Failed,
    /// An optional service whose program is not installed: the rest runs without it.
    Absent,
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Stopping => "stopping",
            Self::Restarting => "restarting",
            Self::Stopped => "stopped",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Absent => "absent",
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

#[derive(Debug)]
pub enum RegistryError {
    Missing(String),
    Io {
        path: String,
        source: std::io::Error,
    },
    Invalid {
        path: String,
        source: serde_json::Error,
    },
    Version {
        path: String,
        found: u32,
    },
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(path) => write!(f, "no registry at {path}: nothing is running here"),
            Self::Io { path, source } => write!(f, "cannot read the registry {path}: {source}"),
            Self::Invalid { path, source } => {
                write!(
                    f,
                    "the registry {path} is not valid registry JSON: {source}"
                )
            }
            Self::Version { path, found } => write!(
                f,
                "the registry {path} has version {found}; this build reads version {REGISTRY_VERSION}"
            ),
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Invalid { source, .. } => Some(source),
            _ => None,
        }
    }
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

/// Writes the registry atomically: a reader sees either the old file or the new one, never half
/// of one. Only the owner may read it, since it holds the control token.
pub fn write(path: &Path, registry: &Registry) -> std::io::Result<()> {
    let mut json = serde_json::to_vec_pretty(registry).map_err(std::io::Error::other)?;
    json.push(b'\n');
    crate::fs::write_atomic(path, &json)
}

/// An instance at `127.0.0.1:port`, for tests here and in the kit.
#[doc(hidden)]
pub fn instance(id: &str, port: u16, state: InstanceState) -> Instance {
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

/// A registry holding one service with `instances`, for tests here and in the kit.
#[doc(hidden)]
pub fn one_service(name: &str, instances: Vec<Instance>) -> Registry {
    let mut reg = Registry {
        version: 1,
        ..Default::default()
    };
    reg.services.insert(
        name.into(),
        ServiceEntry {
            instances,
            build_failed: None,
        },
    );
    reg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        assert!(matches!(read(&path), Err(RegistryError::Missing(_))));
        let reg = one_service(
            "users",
            vec![instance("users-1", 4000, InstanceState::Healthy)],
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

#[cfg(test)]
mod schema {
    use super::*;

    /// The documented schema and the types agree on every state and field name.
    #[test]
    fn the_json_schema_in_docs_matches_the_types() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/registry.schema.json")).unwrap();
        let instance = &schema["properties"]["services"]["additionalProperties"]["properties"]["instances"]
            ["items"]["properties"];
        let documented: Vec<String> = instance["state"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let states = [
            InstanceState::Starting,
            InstanceState::Healthy,
            InstanceState::Unhealthy,
            InstanceState::Stopping,
            InstanceState::Restarting,
            InstanceState::Stopped,
            InstanceState::Completed,
            InstanceState::Failed,
            InstanceState::Absent,
        ];
        let ours: Vec<String> = states.iter().map(|s| s.to_string()).collect();
        assert_eq!(documented, ours);
        let example = serde_json::to_value(instance_for_schema()).unwrap();
        for key in example.as_object().unwrap().keys() {
            assert!(
                instance.get(key).is_some(),
                "field `{key}` is not documented"
            );
        }
        let entry = serde_json::to_value(ServiceEntry {
            instances: vec![],
            build_failed: Some(BuildFailure {
                error: "a.rs:1:1: error".into(),
                at_ms: 1,
            }),
        })
        .unwrap();
        let service = &schema["properties"]["services"]["additionalProperties"]["properties"];
        for key in entry.as_object().unwrap().keys() {
            assert!(
                service.get(key).is_some(),
                "service field `{key}` is not documented"
            );
        }
        let sup = serde_json::to_value(Supervisor::default()).unwrap();
        for key in sup.as_object().unwrap().keys() {
            assert!(
                schema["properties"]["supervisor"]["properties"]
                    .get(key)
                    .is_some(),
                "supervisor field `{key}` is not documented"
            );
        }
    }

    fn instance_for_schema() -> Instance {
        instance("users-1", 4000, InstanceState::Healthy)
    }
}
