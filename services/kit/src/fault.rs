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
    cache: Mutex<(Option<FileStamp>, Faults)>,
}

impl FaultFile {
    /// The faults of the system whose registry is `registry`; none without a registry.
    pub fn beside(registry: Option<&std::path::Path>) -> Self {
        Self {
            path: registry.map(msctl_contract::fault::path_beside),
            cache: Mutex::new((None, Faults::default())),
        }
    }

    /// The fault for a call to `instance` of `service` now, if any.
    pub fn for_call(&self, service: &str, instance: &str) -> Option<Fault> {
        let path = self.path.as_ref()?;
        let stamp = FileStamp::of(path);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if stamp.is_none() {
            *cache = (None, Faults::default());
            return None;
        }
        if cache.0 != stamp {
            // A file being written or broken means no faults, never a failed call.
            let faults = std::fs::read(path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            *cache = (stamp, faults);
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        cache.1.for_call(service, instance, now_ms).cloned()
    }
}
