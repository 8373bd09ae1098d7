//! Faults on demand, applied by the caller (docs/resilience.md): before a call goes out, the
//! kit looks up `msctl fault`'s file beside the registry, re-read only when it changed, and
//! delays the call or answers it itself as that file says.

use crate::discovery::FileStamp;
use msctl_contract::fault::{Fault, Faults};
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Debug)]
pub struct FaultFile {
    path: Option<PathBuf>,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    /// Whether `stamp` and `faults` hold what was last found, the file's absence included.
    checked: bool,
    stamp: Option<FileStamp>,
    faults: Faults,
}

impl FaultFile {
    /// The faults of the system whose registry is `registry`; none without a registry.
    pub fn beside(registry: Option<&std::path::Path>) -> Self {
        Self {
            path: registry.map(msctl_contract::fault::path_beside),
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The fault for a call to `instance` of `service` now, if any. `maybe_changed`: whether
    /// the file may have changed since the last call (discovery's watch of the folder says).
    pub fn for_call(&self, service: &str, instance: &str, maybe_changed: bool) -> Option<Fault> {
        let path = self.path.as_ref()?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if maybe_changed || !cache.checked {
            let stamp = FileStamp::of(path);
            if stamp.is_none() {
                cache.faults = Faults::default();
            } else if cache.stamp != stamp {
                // A file being written or broken means no faults, never a failed call.
                cache.faults = std::fs::read(path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
            }
            cache.stamp = stamp;
            cache.checked = true;
        }
        // No file, no faults.
        cache.stamp?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        cache.faults.for_call(service, instance, now_ms).cloned()
    }
}
