//! Faults on demand, applied by the caller (docs/resilience.md): before a call goes out, the
//! kit looks up `msctl fault`'s file beside the registry, re-read only when it changed, and
//! delays the call or answers it itself as that file says.

use crate::discovery::FileStamp;
use msctl_contract::fault::{Fault, Faults};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct FaultFile {
    path: Option<PathBuf>,
    cache: Mutex<Cache>,
    /// One more than the folder's version at which the file was last found absent; 0 when it
    /// was not. While the version stays, a call needs neither the lock nor a look at the file:
    /// the common case, with no fault set.
    absent_at: AtomicU64,
}

#[derive(Debug, Default)]
struct Cache {
    /// Whether `stamp` and `faults` hold what was last found, the file's absence included.
    checked: bool,
    /// The folder's version at that look.
    version: Option<u64>,
    stamp: Option<FileStamp>,
    faults: Faults,
}

impl FaultFile {
    /// The faults of the system whose registry is `registry`; none without a registry.
    pub fn beside(registry: Option<&std::path::Path>) -> Self {
        Self {
            path: registry.map(msctl_contract::fault::path_beside),
            cache: Mutex::new(Cache::default()),
            absent_at: AtomicU64::new(0),
        }
    }

    /// The fault for a call to `instance` of `service` now, if any. `version`: the version of
    /// the folder (discovery's watch says), `None` when it cannot be told.
    pub fn for_call(&self, service: &str, instance: &str, version: Option<u64>) -> Option<Fault> {
        let path = self.path.as_ref()?;
        let marked = version.map(|v| v.wrapping_add(1));
        if marked.is_some_and(|m| self.absent_at.load(Ordering::Acquire) == m) {
            return None;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if version.is_none() || cache.version != version || !cache.checked {
            let stamp = FileStamp::of(path);
            if stamp.is_none() {
                cache.faults = Faults::default();
            } else if cache.stamp != stamp {
                cache.faults = std::fs::read(path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
            }
            cache.stamp = stamp;
            cache.version = version;
            cache.checked = true;
            if let (None, Some(m)) = (stamp, marked) {
                self.absent_at.store(m, Ordering::Release);
            }
        }
        cache.stamp?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        cache.faults.for_call(service, instance, now_ms).cloned()
    }
}
