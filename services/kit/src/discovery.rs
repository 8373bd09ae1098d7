//! Discovery: where the instances of a service are, from `<NAME>_URL` or the registry file.

use crate::registry::{self, Registry, RegistryError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One instance a caller may send requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub instance: String,
    /// `http://127.0.0.1:41233`, without a trailing slash.
    pub base_url: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    #[error("unknown service `{service}`; known services: {}", list(known))]
    Unknown { service: String, known: Vec<String> },
    #[error("service `{service}` has no healthy instance right now ({detail})")]
    NoHealthy { service: String, detail: String },
    #[error("cannot discover `{service}`: {reason}")]
    Registry { service: String, reason: String },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The environment variable that names a service's address when no registry is used.
pub fn url_variable(service: &str) -> String {
    format!("{}_URL", service.to_ascii_uppercase().replace('-', "_"))
}

/// Finds instances of services. The registry is re-read only when its file changed, so a
/// request costs one `stat`, not a parse.
#[derive(Debug)]
pub struct Discovery {
    registry_path: Option<PathBuf>,
    /// Service name to base URL, from `<NAME>_URL` variables captured at start.
    fixed: BTreeMap<String, String>,
    cache: Mutex<Cache>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Cache {
    stamp: Option<FileStamp>,
    registry: Option<Registry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: std::time::SystemTime,
    len: u64,
    inode: u64,
}

impl Discovery {
    /// `vars` are the process's environment variables; those named `<NAME>_URL` fix a service's
    /// address and win over the registry.
    pub fn new(
        registry_path: Option<PathBuf>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let fixed = vars
            .into_iter()
            .filter_map(|(k, v)| {
                let name = k.strip_suffix("_URL")?;
                let well_formed = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                well_formed.then(|| {
                    (
                        name.to_ascii_lowercase().replace('_', "-"),
                        v.trim_end_matches('/').to_string(),
                    )
                })
            })
            .collect();
        Self {
            registry_path,
            fixed,
            cache: Mutex::new(Cache::default()),
            next: AtomicUsize::new(0),
        }
    }

    /// The healthy instances of `service`.
    pub fn resolve(&self, service: &str) -> Result<Vec<Endpoint>, DiscoveryError> {
        if let Some(url) = self.fixed.get(service) {
            return Ok(vec![Endpoint {
                instance: url_variable(service),
                base_url: url.clone(),
            }]);
        }
        let registry = self.registry(service)?;
        let Some(entry) = registry.as_ref().and_then(|r| r.services.get(service)) else {
            return Err(DiscoveryError::Unknown {
                service: service.to_string(),
                known: self.known_in(registry.as_ref()),
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

    /// Every service this process can find, in name order.
    pub fn known_services(&self) -> Vec<String> {
        let registry = self.registry("").ok().flatten();
        self.known_in(registry.as_ref())
    }

    fn known_in(&self, registry: Option<&Registry>) -> Vec<String> {
        let mut names: Vec<String> = self.fixed.keys().cloned().collect();
        if let Some(r) = registry {
            names.extend(r.services.keys().cloned());
        }
        names.sort();
        names.dedup();
        names
    }

    /// The current registry, re-read only when the file changed. `None` when there is none.
    fn registry(&self, service: &str) -> Result<Option<Registry>, DiscoveryError> {
        let Some(path) = &self.registry_path else {
            return Ok(None);
        };
        let stamp = std::fs::metadata(path).ok().map(|m| FileStamp {
            modified: m.modified().unwrap_or(std::time::UNIX_EPOCH),
            len: m.len(),
            inode: inode(&m),
        });
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if stamp.is_some() && cache.stamp == stamp {
            return Ok(cache.registry.clone());
        }
        match registry::read(path) {
            Ok(r) => {
                cache.stamp = stamp;
                cache.registry = Some(r);
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

    #[test]
    fn url_variables_win_and_need_no_registry() {
        let d = Discovery::new(
            None,
            [
                (
                    "USERS_URL".to_string(),
                    "http://127.0.0.1:9001/".to_string(),
                ),
                ("HOME".into(), "/root".into()),
            ],
        );
        assert_eq!(d.pick("users").unwrap().base_url, "http://127.0.0.1:9001");
        assert_eq!(d.known_services(), vec!["users"]);
        let err = d.resolve("posts").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown service `posts`; known services: users"
        );
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
