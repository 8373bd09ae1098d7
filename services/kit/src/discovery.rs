//! Discovery: where the instances of a service are. Under msctl (a registry is given) only the
//! registry counts; a service run by hand finds a peer through that peer's `<NAME>_URL` variable.

use crate::registry::{self, Registry, RegistryError};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use thread_local::ThreadLocal;

/// One instance a caller may send requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub instance: String,
    /// `http://127.0.0.1:41233`, without a trailing slash.
    pub base_url: String,
}

/// An endpoint is known to the balancer by its instance's name.
impl AsRef<str> for Endpoint {
    fn as_ref(&self) -> &str {
        &self.instance
    }
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

/// Finds instances of services. The registry is re-read only when its file changed, and a
/// call learns that without a lock: see [`Freshness`].
#[derive(Debug)]
pub struct Discovery {
    registry_path: Option<PathBuf>,
    /// `<NAME>_URL` variables captured at start, consulted only without a registry and only for
    /// the service asked about: an unrelated `DATABASE_URL` is never taken for a service.
    vars: BTreeMap<String, String>,
    /// The registry's folder, watched from the first look on.
    freshness: OnceLock<Freshness>,
    /// What was last found, for the threads whose own copy is out of date.
    cache: Mutex<Cache>,
    /// Each thread's own copy: the gateway resolves on every request, on every worker.
    local: ThreadLocal<RefCell<Local>>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Cache {
    /// Whether `stamp` and `registry` hold what was last found, the file's absence included.
    checked: bool,
    stamp: Option<FileStamp>,
    /// Shared, not copied, by every thread that reads it.
    registry: Option<Arc<Registry>>,
}

/// A thread's copy of the registry, good while the folder's version is `version`, and the
/// healthy endpoints of the services asked about, made from that registry once.
#[derive(Debug, Default)]
struct Local {
    version: Option<u64>,
    registry: Option<Arc<Registry>>,
    healthy: Vec<(String, Arc<[Endpoint]>)>,
}

/// What tells a changed file from an unchanged one without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    modified: std::time::SystemTime,
    len: u64,
    inode: u64,
}

/// Tells, without looking the file up by its path and without a lock, whether a folder may
/// have changed since a version it gave: an inotify watch on the folder, asked once a check how
/// many bytes of events are queued (`FIONREAD`), which takes nothing off the queue. The kernel
/// queues an event within the writer's own `rename` or `write`, so a check made after a change
/// returned always sees it.
///
/// Only a check that finds events queued takes the lock and reads them, and it moves the version
/// on *before* it takes them off the queue: a check on another thread that finds the queue
/// emptied by it therefore finds the new version too. Every thread keeps its own copy of what
/// it read at a version (`Discovery`'s per-thread cache), so the calls of a loaded service
/// never wait on one another (the profile of the gateway showed a shared lock here as a third
/// of its futex calls).
///
/// Any event in the folder moves the version on, for the registry and the fault file beside it
/// alike; a reader then compares the file's stamp, which is cheap. Where no watch can be had
/// (another system, the per-user limit of watches reached, no folder yet) or the folder went,
/// there is no version, and the caller compares stamps at every call.
#[derive(Debug)]
pub(crate) struct Freshness {
    #[cfg(target_os = "linux")]
    watch: Option<Watch>,
}

#[cfg(target_os = "linux")]
#[derive(Debug)]
struct Watch {
    inotify: Mutex<inotify::Inotify>,
    fd: std::os::fd::RawFd,
    version: std::sync::atomic::AtomicU64,
    /// The folder went: from then on, stamps only.
    lost: std::sync::atomic::AtomicBool,
}

impl Freshness {
    pub(crate) fn of(path: &std::path::Path) -> Self {
        #[cfg(target_os = "linux")]
        {
            let watch = path.parent().and_then(|folder| {
                use inotify::WatchMask;
                use std::os::fd::AsRawFd;
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
                Some(Watch {
                    fd: inotify.as_raw_fd(),
                    inotify: Mutex::new(inotify),
                    version: Default::default(),
                    lost: Default::default(),
                })
            });
            Self { watch }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = path;
            Self {}
        }
    }

    /// The folder's version now: the same number at two checks means nothing in it changed
    /// between them. `None` when that cannot be told.
    pub(crate) fn version(&self) -> Option<u64> {
        #[cfg(target_os = "linux")]
        {
            use std::sync::atomic::Ordering::SeqCst;
            let watch = self.watch.as_ref()?;
            if watch.lost.load(SeqCst) {
                return None;
            }
            let mut queued: libc::c_int = 0;
            // SAFETY: FIONREAD writes one c_int through the pointer, which points at `queued`;
            // `fd` stays open as long as `watch.inotify`, which `self` owns.
            if unsafe { libc::ioctl(watch.fd, libc::FIONREAD, &mut queued) } != 0 {
                return None;
            }
            if queued > 0 {
                watch.take_events();
            }
            (!watch.lost.load(SeqCst)).then(|| watch.version.load(SeqCst))
        }
        #[cfg(not(target_os = "linux"))]
        None
    }
}

#[cfg(target_os = "linux")]
impl Watch {
    /// Moves the version on, then empties the queue.
    fn take_events(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let mut inotify = self.inotify.lock().unwrap_or_else(|e| e.into_inner());
        self.version.fetch_add(1, SeqCst);
        let mut buffer = [0u8; 4096];
        loop {
            match inotify.read_events(&mut buffer) {
                Ok(events) => {
                    for event in events {
                        use inotify::EventMask;
                        if event.mask.intersects(
                            // Dropped events (an overflow) are covered by the version moved on
                            // above; a folder gone is not.
                            EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF,
                        ) {
                            self.lost.store(true, SeqCst);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.lost.store(true, SeqCst);
                    break;
                }
            }
        }
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
            freshness: OnceLock::new(),
            cache: Mutex::new(Cache::default()),
            local: ThreadLocal::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// The registry file, when msctl runs this service.
    pub fn registry_path(&self) -> Option<&std::path::Path> {
        self.registry_path.as_deref()
    }

    /// The healthy instances of `service`.
    pub fn resolve(&self, service: &str) -> Result<Vec<Endpoint>, DiscoveryError> {
        self.healthy(service).map(|all| all.to_vec())
    }

    /// As `resolve`, shared: made once a registry, not once a call.
    pub fn healthy(&self, service: &str) -> Result<Arc<[Endpoint]>, DiscoveryError> {
        if self.registry_path.is_none() {
            let variable = url_variable(service);
            return match self.vars.get(&variable) {
                Some(url) => Ok(Arc::from([Endpoint {
                    instance: variable,
                    base_url: url.trim_end_matches('/').to_string(),
                }])),
                None => Err(DiscoveryError::Unknown {
                    service: service.to_string(),
                    known: Vec::new(),
                }),
            };
        }
        let registry = self.registry(service)?;
        // `registry` is this thread's copy, which `healthy` was made from.
        let local = self.local.get_or_default();
        if let Some((_, found)) = local.borrow().healthy.iter().find(|(s, _)| s == service) {
            return Ok(found.clone());
        }
        let Some(entry) = registry.as_ref().and_then(|r| r.services.get(service)) else {
            return Err(DiscoveryError::Unknown {
                service: service.to_string(),
                known: self.known_in(registry.as_deref()),
            });
        };
        let healthy: Arc<[Endpoint]> = entry
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
        local
            .borrow_mut()
            .healthy
            .push((service.to_string(), healthy.clone()));
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

    /// The version of the registry's folder as of this thread's last look (each call looks
    /// first): the fault file beside the registry has not changed while it stays the same.
    /// `None` when that cannot be told.
    pub(crate) fn folder_version(&self) -> Option<u64> {
        self.local.get().and_then(|local| local.borrow().version)
    }

    /// The current registry, re-read only when the file changed. `None` when there is none.
    fn registry(&self, service: &str) -> Result<Option<Arc<Registry>>, DiscoveryError> {
        let Some(path) = &self.registry_path else {
            return Ok(None);
        };
        // Taken before the file is looked at: a change after this moves it on, and the next
        // call looks again.
        let version = self.freshness.get_or_init(|| Freshness::of(path)).version();
        let local = self.local.get_or_default();
        if version.is_some() && local.borrow().version == version {
            return Ok(local.borrow().registry.clone());
        }
        let found = self.shared(path, service);
        let mut local = local.borrow_mut();
        match &found {
            Ok(registry) => {
                let same = match (registry, &local.registry) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (a, b) => a.is_none() && b.is_none(),
                };
                if !same {
                    local.healthy.clear();
                    local.registry = registry.clone();
                }
                local.version = version;
            }
            // Looked at again next time, whatever the version: the error is reported until
            // the file is mended.
            Err(_) => local.version = None,
        }
        found
    }

    /// The registry as the file now is, read again only when its stamp changed.
    fn shared(
        &self,
        path: &std::path::Path,
        service: &str,
    ) -> Result<Option<Arc<Registry>>, DiscoveryError> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = FileStamp::of(path);
        if cache.checked && cache.stamp == stamp {
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
    fn a_change_is_seen_by_the_next_check_on_any_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let watch = Freshness::of(&path);
        let linux = cfg!(target_os = "linux");
        let first = watch.version();
        assert_eq!(first.is_some(), linux);
        assert_eq!(watch.version(), first, "nothing happened yet");
        let reg = Registry {
            version: 1,
            ..Default::default()
        };
        let mut last = first;
        for round in 0..3 {
            // Seen by the very next check: the event is queued within the write itself. Taken
            // off the queue on one thread, it is seen on another as well.
            registry::write(&path, &reg).unwrap();
            let now = if round % 2 == 0 {
                watch.version()
            } else {
                std::thread::scope(|s| s.spawn(|| watch.version()).join().unwrap())
            };
            if linux {
                assert_ne!(now, last, "round {round}");
                assert_eq!(watch.version(), now, "each change moves it on once");
                assert_eq!(
                    std::thread::scope(|s| s.spawn(|| watch.version()).join().unwrap()),
                    now,
                    "the same on another thread"
                );
            }
            last = now;
        }
        // The fault file beside the registry moves it on too.
        std::fs::write(dir.path().join("faults.json"), b"{}").unwrap();
        if linux {
            assert_ne!(watch.version(), last, "a file beside it");
        }
        // Without its folder, the watch is gone for good: no version to go by.
        let gone = dir.path().to_path_buf();
        drop(dir);
        assert!(!gone.exists());
        assert_eq!(watch.version(), None);
        assert_eq!(watch.version(), None);
    }

    #[test]
    fn every_thread_sees_each_change_at_its_next_call() {
        let (_dir, path) = users_registry_file();
        let d = Discovery::new(Some(path.clone()), []);
        let port_seen = |d: &Discovery| {
            std::thread::scope(|s| {
                s.spawn(|| d.pick("users").unwrap().base_url)
                    .join()
                    .unwrap()
            })
        };
        assert_eq!(d.pick("users").unwrap().base_url, "http://127.0.0.1:1001");
        assert_eq!(port_seen(&d), "http://127.0.0.1:1001");
        for port in [1002, 1003] {
            registry::write(&path, &users_at(port)).unwrap();
            let url = format!("http://127.0.0.1:{port}");
            assert_eq!(d.pick("users").unwrap().base_url, url);
            assert_eq!(port_seen(&d), url);
        }
        // Unchanged, a thread's copy is the same one: made once, not at every call.
        assert!(Arc::ptr_eq(
            &d.healthy("users").unwrap(),
            &d.healthy("users").unwrap()
        ));
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
