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

impl Endpoint {
    /// The address `base_url` names, when it names one by IP and port.
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        self.base_url.strip_prefix("http://")?.parse().ok()
    }
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
    /// Whether the file may have changed since `stamp` was taken.
    watch: Option<Freshness>,
    /// Whether `stamp` and `registry` hold what was last found, the file's absence included.
    checked: bool,
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

/// Tells, without looking the file up by its path, whether it may have changed since last asked:
/// an inotify watch on its folder, read without blocking. The kernel queues the event within the
/// writer's own `rename` or `write`, so a check made after a change returned always sees it.
/// Where no watch can be had (another system, the per-user limit of watches reached, no folder
/// yet), every check answers "maybe", and the caller compares stamps as before.
///
/// It also keeps, for a second file in the folder (the fault file beside the registry), whether
/// that one changed, seen in the same read: a call then asks the kernel once, not once a file.
#[derive(Debug)]
pub(crate) struct Freshness {
    name: std::ffi::OsString,
    companion: Option<std::ffi::OsString>,
    /// Whether the companion may have changed since `take_companion_change` last said.
    companion_changed: bool,
    #[cfg(target_os = "linux")]
    watch: Option<inotify::Inotify>,
}

impl Freshness {
    pub(crate) fn of(path: &std::path::Path) -> Self {
        let name = path.file_name().unwrap_or_default().to_os_string();
        #[cfg(target_os = "linux")]
        {
            let watch = path.parent().and_then(|folder| {
                use inotify::WatchMask;
                let inotify = inotify::Inotify::init().ok()?;
                // No MODIFY: the span store beside the registry changes all the time, and
                // files written in place are seen when their writer closes them.
                let mask = WatchMask::CREATE
                    | WatchMask::CLOSE_WRITE
                    | WatchMask::ATTRIB
                    | WatchMask::MOVED_TO
                    | WatchMask::MOVED_FROM
                    | WatchMask::DELETE
                    | WatchMask::DELETE_SELF
                    | WatchMask::MOVE_SELF;
                inotify.watches().add(folder, mask).ok()?;
                Some(inotify)
            });
            Self {
                name,
                companion: None,
                companion_changed: true,
                watch,
            }
        }
        #[cfg(not(target_os = "linux"))]
        Self {
            name,
            companion: None,
            companion_changed: true,
        }
    }

    /// Also notes changes to `name`, a file in the same folder.
    pub(crate) fn with_companion(mut self, name: std::ffi::OsString) -> Self {
        self.companion = Some(name);
        self
    }

    /// False only when the companion has certainly not changed since last asked, as of the last
    /// `maybe_changed`.
    pub(crate) fn take_companion_change(&mut self) -> bool {
        #[cfg(target_os = "linux")]
        if self.watch.is_none() {
            return true;
        }
        std::mem::take(&mut self.companion_changed)
    }

    /// False only when the file has certainly not changed since the last call.
    pub(crate) fn maybe_changed(&mut self) -> bool {
        #[cfg(target_os = "linux")]
        {
            let Some(watch) = &mut self.watch else {
                return true;
            };
            let mut changed = false;
            let mut lost = false;
            let mut buffer = [0u8; 4096];
            // Every queued event is read, so that the next call finds the queue empty.
            loop {
                match watch.read_events(&mut buffer) {
                    Ok(events) => {
                        for event in events {
                            use inotify::EventMask;
                            if event.mask.intersects(
                                EventMask::Q_OVERFLOW
                                    | EventMask::IGNORED
                                    | EventMask::DELETE_SELF
                                    | EventMask::MOVE_SELF,
                            ) {
                                lost = true;
                            }
                            changed |= event.name.is_none_or(|n| n == self.name.as_os_str());
                            self.companion_changed |= event
                                .name
                                .is_none_or(|n| Some(n) == self.companion.as_deref());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        lost = true;
                        break;
                    }
                }
            }
            if lost {
                // The folder went, or events were dropped: from now on, stamps only.
                self.watch = None;
            }
            changed || lost
        }
        #[cfg(not(target_os = "linux"))]
        true
    }
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

    /// False only when the fault file beside the registry has certainly not changed since this
    /// was last asked, as of the registry's last check (each call checks the registry first).
    pub(crate) fn faults_maybe_changed(&self) -> bool {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .watch
            .as_mut()
            .is_none_or(Freshness::take_companion_change)
    }

    /// The current registry, re-read only when the file changed. `None` when there is none.
    fn registry(&self, service: &str) -> Result<Option<Arc<Registry>>, DiscoveryError> {
        let Some(path) = &self.registry_path else {
            return Ok(None);
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let watch = cache.watch.get_or_insert_with(|| {
            let faults = msctl_contract::fault::path_beside(path);
            Freshness::of(path).with_companion(faults.file_name().unwrap_or_default().into())
        });
        if !watch.maybe_changed() && cache.checked {
            return Ok(cache.registry.clone());
        }
        let stamp = FileStamp::of(path);
        if stamp.is_some() && cache.stamp == stamp {
            return Ok(cache.registry.clone());
        }
        match registry::read(path) {
            Ok(r) => {
                cache.checked = true;
                cache.stamp = stamp;
                cache.registry = Some(Arc::new(r));
                Ok(cache.registry.clone())
            }
            Err(RegistryError::Missing(_)) => {
                cache.checked = true;
                cache.stamp = None;
                cache.registry = None;
                Ok(None)
            }
            Err(e) => {
                // Read again next time, whatever the watch says: the error is reported until
                // the file is mended.
                cache.checked = false;
                Err(DiscoveryError::Registry {
                    service: service.to_string(),
                    reason: e.to_string(),
                })
            }
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
    use crate::registry::{InstanceState, instance, one_service};

    fn vars() -> Vec<(String, String)> {
        vec![
            ("USERS_URL".into(), "http://127.0.0.1:9001/".into()),
            ("DATABASE_URL".into(), "postgres://db/app".into()),
            ("HOME".into(), "/root".into()),
        ]
    }

    /// A registry with one healthy users instance at `port`.
    fn users_at(port: u16) -> Registry {
        one_service(
            "users",
            vec![instance("users-1", port, InstanceState::Healthy)],
        )
    }

    /// A registry file in a folder of its own, with users-1 healthy at port 1001.
    fn users_registry_file() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        registry::write(&path, &users_at(1001)).unwrap();
        (dir, path)
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
        let (_dir, path) = users_registry_file();
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

        let mut reg = one_service(
            "users",
            vec![
                instance("users-1", 1001, InstanceState::Healthy),
                instance("users-2", 1002, InstanceState::Starting),
            ],
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

    #[test]
    fn a_change_is_seen_by_the_next_check_and_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let mut watch = Freshness::of(&path);
        let linux = cfg!(target_os = "linux");
        assert_eq!(watch.maybe_changed(), !linux, "nothing happened yet");
        let reg = Registry {
            version: 1,
            ..Default::default()
        };
        for _ in 0..3 {
            // Seen by the very next check: the event is queued within the write itself.
            registry::write(&path, &reg).unwrap();
            assert!(watch.maybe_changed());
            assert_eq!(
                watch.maybe_changed(),
                !linux,
                "each change is reported once"
            );
        }
        std::fs::write(dir.path().join("telemetry.db-wal"), b"spans").unwrap();
        assert_eq!(watch.maybe_changed(), !linux, "another file in the folder");
        std::fs::remove_file(&path).unwrap();
        assert!(watch.maybe_changed(), "the file went");
        // Without its folder, the watch is gone for good: every check says "maybe".
        let gone = dir.path().to_path_buf();
        drop(dir);
        assert!(!gone.exists());
        assert!(watch.maybe_changed());
        assert!(watch.maybe_changed());
    }

    #[test]
    fn a_broken_registry_is_reported_until_it_is_mended() {
        let (_dir, path) = users_registry_file();
        let d = Discovery::new(Some(path.clone()), []);
        assert!(d.resolve("users").is_ok());
        std::fs::write(&path, b"{ not json").unwrap();
        for _ in 0..2 {
            assert!(matches!(
                d.resolve("users"),
                Err(DiscoveryError::Registry { .. })
            ));
        }
        registry::write(&path, &users_at(1001)).unwrap();
        assert_eq!(d.resolve("users").unwrap()[0].instance, "users-1");
    }
}
