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
    /// A job ran to its end and exited 0.
    Completed {
        instance: String,
        took_ms: f64,
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

/// Log lines sent for the live view and not yet taken, at most. A service can write faster than
/// a terminal shows lines (or than a detached supervisor drops them): `yes` as a service queued
/// 1.4 GB of them in the supervisor in five seconds. Past this, a line is left to the log file,
/// which has every one, and counted.
pub const LIVE_LINES: usize = 4096;

#[derive(Debug, Default)]
struct Live {
    /// Whether anyone shows log lines: a detached supervisor does not, and then making an event
    /// of each line would cost it more than writing the line to its file (a gateway under load
    /// writes tens of thousands a second).
    wanted: bool,
    in_flight: std::sync::atomic::AtomicUsize,
    skipped: std::sync::atomic::AtomicU64,
}

/// Where the supervisor sends its events: progress always, log lines within [`LIVE_LINES`].
#[derive(Debug, Clone)]
pub struct Sender {
    tx: tokio::sync::mpsc::UnboundedSender<Event>,
    live: std::sync::Arc<Live>,
}

/// What `up` shows, or `supervise` forwards.
#[derive(Debug)]
pub struct Receiver {
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    live: std::sync::Arc<Live>,
}

/// A channel for the supervisor's events; log lines go on it only if `live_logs`.
pub fn channel(live_logs: bool) -> (Sender, Receiver) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let live = std::sync::Arc::new(Live {
        wanted: live_logs,
        ..Live::default()
    });
    (
        Sender {
            tx,
            live: live.clone(),
        },
        Receiver { rx, live },
    )
}

impl Sender {
    pub fn send(
        &self,
        event: Event,
    ) -> Result<(), Box<tokio::sync::mpsc::error::SendError<Event>>> {
        self.tx.send(event).map_err(Box::new)
    }

    /// One line of `instance`'s output, unless no one shows it or the live view is that far
    /// behind.
    pub fn log(&self, instance: &str, line: &[u8]) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.live.wanted {
            return;
        }
        if self.live.in_flight.load(Relaxed) >= LIVE_LINES {
            self.live.skipped.fetch_add(1, Relaxed);
            return;
        }
        self.live.in_flight.fetch_add(1, Relaxed);
        let event = Event::Log {
            instance: instance.to_string(),
            line: String::from_utf8_lossy(line).into_owned(),
        };
        if self.tx.send(event).is_err() {
            self.live.in_flight.fetch_sub(1, Relaxed);
        }
    }
}

impl Receiver {
    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.rx.recv().await?;
        if let Event::Log { .. } = event {
            self.live
                .in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        Some(event)
    }

    /// Log lines left out of the live view since the last call.
    pub fn skipped(&self) -> u64 {
        self.live
            .skipped
            .swap(0, std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_live_view_log_lines_are_not_queued_and_progress_is() {
        let (tx, mut rx) = channel(false);
        tx.log("s-1", b"a line no one shows");
        tx.send(Event::Stopped {
            instance: "s-1".into(),
        })
        .unwrap();
        drop(tx);
        assert!(matches!(rx.recv().await, Some(Event::Stopped { .. })));
        assert!(rx.recv().await.is_none(), "the log line was queued");
        assert_eq!(
            rx.skipped(),
            0,
            "a line not wanted is not counted as skipped"
        );
    }

    #[tokio::test]
    async fn log_lines_past_the_live_cap_are_counted_not_queued() {
        let (tx, mut rx) = channel(true);
        for i in 0..LIVE_LINES + 100 {
            tx.log("s-1", format!("line {i}").as_bytes());
        }
        assert_eq!(rx.skipped(), 100);
        assert_eq!(rx.skipped(), 0, "counted once");
        // Progress is never held back by the cap.
        tx.send(Event::Stopped {
            instance: "s-1".into(),
        })
        .unwrap();
        // As the view takes lines, there is room for new ones.
        for _ in 0..10 {
            assert!(matches!(rx.recv().await, Some(Event::Log { .. })));
        }
        tx.log("s-1", b"fresh");
        assert_eq!(rx.skipped(), 0);
        let mut last = None;
        for _ in 0..LIVE_LINES - 10 + 1 {
            last = rx.recv().await;
        }
        assert!(matches!(last, Some(Event::Stopped { .. })), "{last:?}");
        assert!(matches!(rx.recv().await, Some(Event::Log { line, .. }) if line == "fresh"));
    }
}
