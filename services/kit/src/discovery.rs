//! Discovery: where the instances of a service are. Under msctl (a registry is given) only the
//! registry counts; a service run by hand finds a peer through that peer's `<NAME>_URL` variable.

use crate::registry::{self, Registry, RegistryError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One instance a caller may send requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub instance: String,
    /// `http://127.0.0.1:41233`, without a trailing slash.
    pub base_url: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "unknown service `{service}`; known services: {}",
        list(known, service)
    )]
    Unknown { service: String, known: Vec<String> },
    #[error("service `{service}` has no healthy instance right now ({detail})")]
    NoHealthy { service: String, detail: String },
    #[error("cannot discover `{service}`: {reason}")]
    Registry { service: String, reason: String },
}

fn list(names: &[String], service: &str) -> String {
    if names.is_empty() {
        format!(
            "none (set {} to reach it without msctl)",
            url_variable(service)
        )
    } else {
        names.join(", ")
    }
}

pub use msctl_contract::env::url_variable;

/// Finds instances of services. The registry is re-read only when its file changed, so a
/// request costs one `stat`, not a parse.
#[derive(Debug)]
pub struct Discovery {
    registry_path: Option<PathBuf>,
    /// `<NAME>_URL` variables captured at start, consulted only without a registry and only for
    /// the service asked about: an unrelated `DATABASE_URL` is never taken for a service.
    vars: BTreeMap<String, String>,
    cache: Mutex<Cache>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Cache {
    stamp: Option<FileStamp>,
    /// Shared, not copied, by every call that reads it: the gateway resolves on each request.
    registry: Option<Arc<Registry>>,
}

/// What tells a changed file from an unchanged one without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    modified: std::time::SystemTime,
    len: u64,
    inode: u64,
}

impl FileStamp {
    /// `None` when there is no such file.
    pub(crate) fn of(path: &std::path::Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self {
            modified: m.modified().unwrap_or(std::time::UNIX_EPOCH),
            len: m.len(),
            inode: inode(&m),
        })
    }
}

impl Discovery {
    /// `vars` are the process's environment variables. With a registry they are ignored, so a
    /// stale `USERS_URL` in a shell cannot win over what msctl runs.
    pub fn new(
        registry_path: Option<PathBuf>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let vars = if registry_path.is_some() {
            BTreeMap::new()
        } else {
            vars.into_iter()
                .filter(|(k, _)| k.ends_with("_URL"))
                .collect()
        };
        Self {
            registry_path,
            vars,
            cache: Mutex::new(Cache::default()),
            next: AtomicUsize::new(0),
        }
    }

    /// The registry file, when msctl runs this service.
    pub fn registry_path(&self) -> Option<&std::path::Path> {
        self.registry_path.as_deref()
    }

    /// The healthy instances of `service`.
    pub fn resolve(&self, service: &str) -> Result<Vec<Endpoint>, DiscoveryError> {
        if self.registry_path.is_none() {
            let variable = url_variable(service);
            return match self.vars.get(&variable) {
                Some(url) => Ok(vec![Endpoint {
                    instance: variable,
                    base_url: url.trim_end_matches('/').to_string(),
                }]),
                None => Err(DiscoveryError::Unknown {
                    service: service.to_string(),
                    known: Vec::new(),
                }),
            };
        }
        let registry = self.registry(service)?;
        let Some(entry) = registry.as_ref().and_then(|r| r.services.get(service)) else {
            return Err(DiscoveryError::Unknown {
                service: service.to_string(),
                known: self.known_in(registry.as_deref()),
            });
        };
        let healthy: Vec<Endpoint> = entry
            .instances
            .iter()
            .filter(|i| i.state == registry::InstanceState::Healthy)
            .map(|i| Endpoint {
                instance: i.id.clone(),
                base_url: format!("http://{}", i.address),
            })
            .collect();
        if healthy.is_empty() {
            let detail = if entry.instances.is_empty() {
                "no instances".to_string()
            } else {
                entry
                    .instances
                    .iter()
                    .map(|i| format!("{} is {}", i.id, i.state))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(DiscoveryError::NoHealthy {
                service: service.to_string(),
                detail,
            });
        }
        Ok(healthy)
    }

    /// One healthy instance of `service`, taking turns across replicas.
    pub fn pick(&self, service: &str) -> Result<Endpoint, DiscoveryError> {
        let mut all = self.resolve(service)?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % all.len();
        Ok(all.swap_remove(i))
    }

    /// Every service in the registry, in name order; none without one.
    pub fn known_services(&self) -> Vec<String> {
        let registry = self.registry("").ok().flatten();
        self.known_in(registry.as_deref())
    }

    fn known_in(&self, registry: Option<&Registry>) -> Vec<String> {
        registry
            .map(|r| r.services.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The current registry, re-read only when the file changed. `None` when there is none.
    fn registry(&self, service: &str) -> Result<Option<Arc<Registry>>, DiscoveryError> {
        let Some(path) = &self.registry_path else {
            return Ok(None);
        };
        let stamp = FileStamp::of(path);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if stamp.is_some() && cache.stamp == stamp {
            return Ok(cache.registry.clone());
        }
        match registry::read(path) {
            Ok(r) => {
                cache.stamp = stamp;
                cache.registry = Some(Arc::new(r));
                Ok(cache.registry.clone())
            }
            Err(RegistryError::Missing(_)) => {
                *cache = Cache::default();
                Ok(None)
            }
            Err(e) => Err(DiscoveryError::Registry {
                service: service.to_string(),
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(unix)]
fn inode(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{InstanceState, ServiceEntry, instance};

    fn vars() -> Vec<(String, String)> {
        vec![
            ("USERS_URL".into(), "http://127.0.0.1:9001/".into()),
            ("DATABASE_URL".into(), "postgres://db/app".into()),
            ("HOME".into(), "/root".into()),
        ]
    }

    #[test]
    fn without_a_registry_only_the_asked_for_variable_counts() {
        let d = Discovery::new(None, vars());
        assert_eq!(d.pick("users").unwrap().base_url, "http://127.0.0.1:9001");
        // DATABASE_URL is no service: nothing lists it.
        assert!(d.known_services().is_empty());
        let err = d.resolve("posts").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown service `posts`; known services: none (set POSTS_URL to reach it without msctl)"
        );
    }

    #[test]
    fn under_msctl_inherited_url_variables_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let mut reg = Registry {
            version: 1,
            ..Default::default()
        };
        reg.services.insert(
            "users".into(),
            ServiceEntry {
                instances: vec![instance("users-1", 1001, InstanceState::Healthy)],
                build_failed: None,
            },
        );
        registry::write(&path, &reg).unwrap();
        let d = Discovery::new(Some(path), vars());
        // A stale USERS_URL from the user's shell does not win over the registry.
        assert_eq!(d.pick("users").unwrap().base_url, "http://127.0.0.1:1001");
        assert_eq!(d.known_services(), vec!["users"]);
        assert!(matches!(
            d.resolve("database"),
            Err(DiscoveryError::Unknown { .. })
        ));
    }

    #[test]
    fn reads_healthy_instances_and_notices_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let d = Discovery::new(Some(path.clone()), []);
        assert!(matches!(
            d.resolve("users"),
            Err(DiscoveryError::Unknown { .. })
        ));

        let mut reg = Registry {
            version: 1,
            ..Default::default()
        };
        reg.services.insert(
            "users".into(),
            ServiceEntry {
                instances: vec![
                    instance("users-1", 1001, InstanceState::Healthy),
                    instance("users-2", 1002, InstanceState::Starting),
                ],
                build_failed: None,
            },
        );
        registry::write(&path, &reg).unwrap();
        let found = d.resolve("users").unwrap();
        assert_eq!(
            found,
            vec![Endpoint {
                instance: "users-1".into(),
                base_url: "http://127.0.0.1:1001".into()
            }]
        );

        reg.services.get_mut("users").unwrap().instances[1].state = InstanceState::Healthy;
        registry::write(&path, &reg).unwrap();
        let picks: std::collections::BTreeSet<String> =
            (0..4).map(|_| d.pick("users").unwrap().instance).collect();
        assert_eq!(picks.len(), 2, "round robin over both replicas");

        reg.services.get_mut("users").unwrap().instances =
            vec![instance("users-1", 1001, InstanceState::Unhealthy)];
        registry::write(&path, &reg).unwrap();
        let err = d.resolve("users").unwrap_err().to_string();
        assert!(err.contains("users-1 is unhealthy"), "{err}");
    }
}
