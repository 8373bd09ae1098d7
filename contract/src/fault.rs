//! Faults on demand (docs/resilience.md): what `msctl fault` asks callers to do to the requests
//! they send a service, or one instance of it. The file sits beside the registry
//! (`.msctl/faults.json`); callers apply it, as Istio's fault injection does, so it works
//! whatever language the target is written in.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file's name, in the registry's folder.
pub const FILE: &str = "faults.json";

/// Where the faults of the system whose registry is `registry` are kept.
pub fn path_beside(registry: &Path) -> PathBuf {
    registry.with_file_name(FILE)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// One fault: for calls to `target` (a service, or an instance such as `posts-2`), wait `delay_ms`
/// first, then answer `status` instead of sending the call, with probability `error_rate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub target: String,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub error_rate: f64,
    #[serde(default = "default_status")]
    pub status: u16,
    /// Unix milliseconds after which the fault no longer applies; none: until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

fn default_status() -> u16 {
    503
}

impl Faults {
    /// The fault that applies to a call to `instance` of `service` at `now_ms`: an instance's own
    /// wins over its service's.
    pub fn for_call(&self, service: &str, instance: &str, now_ms: u64) -> Option<&Fault> {
        let live = |f: &&Fault| f.until_ms.is_none_or(|until| now_ms < until);
        let find = |target: &str| self.faults.iter().filter(live).find(|f| f.target == target);
        find(instance).or_else(|| find(service))
    }

    /// Sets `fault`, replacing any for the same target.
    pub fn set(&mut self, fault: Fault) {
        self.faults.retain(|f| f.target != fault.target);
        self.faults.push(fault);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(target: &str, until_ms: Option<u64>) -> Fault {
        Fault {
            target: target.into(),
            delay_ms: 0,
            error_rate: 1.0,
            status: 503,
            until_ms,
        }
    }

    #[test]
    fn an_instances_own_fault_wins_and_expired_ones_do_not_apply() {
        let mut faults = Faults::default();
        faults.set(fault("posts", None));
        faults.set(fault("posts-2", Some(100)));
        assert_eq!(
            faults.for_call("posts", "posts-2", 50).unwrap().target,
            "posts-2"
        );
        assert_eq!(
            faults.for_call("posts", "posts-2", 100).unwrap().target,
            "posts"
        );
        assert_eq!(
            faults.for_call("posts", "posts-1", 0).unwrap().target,
            "posts"
        );
        assert!(faults.for_call("users", "users-1", 0).is_none());
        faults.set(fault("posts", Some(10)));
        assert_eq!(faults.faults.len(), 2, "set replaces the target's fault");
        let text = serde_json::to_string(&faults).unwrap();
        assert_eq!(serde_json::from_str::<Faults>(&text).unwrap(), faults);
    }
}
