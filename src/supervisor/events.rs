//! What the supervisor reports as it works: progress for `up`, and log lines in the foreground.
//! A detached supervisor sends the same events, as JSON lines, to the `msctl up -d` that started it.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Starting {
        instance: String,
    },
    Healthy {
        instance: String,
        address: String,
        startup_ms: f64,
    },
    /// The instance did not become healthy: `up` fails.
    Failed {
        instance: String,
        reason: String,
        log: PathBuf,
    },
    Exited {
        instance: String,
        reason: String,
    },
    Unhealthy {
        instance: String,
        reason: String,
    },
    Restarting {
        instance: String,
        after_ms: u64,
        restarts: u32,
    },
    GaveUp {
        instance: String,
        reason: String,
    },
    Stopping {
        instance: String,
    },
    Stopped {
        instance: String,
    },
    Log {
        instance: String,
        line: String,
    },
    /// An optional service's program is not installed: the rest runs without it.
    Absent {
        service: String,
        reason: String,
    },
    /// A watch cycle finished: what changed, what was rebuilt and replaced.
    Watch {
        cycle: crate::watch::report::Cycle,
    },
    /// Every requested service is healthy.
    Ready {
        supervisor_pid: u32,
    },
    /// Start-up failed and what was started has been stopped again.
    Aborted {
        message: String,
        instance: Option<String>,
        log: Option<PathBuf>,
        /// The exit code `up -d` reports, so that it is the one a foreground `up` would give.
        #[serde(default)]
        code: Option<u8>,
    },
}
