//! Signals a supervisor obeys: the first SIGTERM, SIGINT or SIGHUP (a closed terminal) stops
//! everything gracefully; a second one while stopping forces the stop.

use std::io;

/// The signals a supervisor listens to, installed once at its start.
pub struct Signals {
    #[cfg(unix)]
    streams: [(tokio::signal::unix::Signal, &'static str); 3],
}

impl Signals {
    pub fn install() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                streams: [
                    (signal(SignalKind::terminate())?, "SIGTERM"),
                    (signal(SignalKind::interrupt())?, "SIGINT"),
                    (signal(SignalKind::hangup())?, "SIGHUP"),
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next of the three; its name.
    pub async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            let [(term, a), (int, b), (hup, c)] = &mut self.streams;
            tokio::select! {
                _ = term.recv() => a,
                _ = int.recv() => b,
                _ = hup.recv() => c,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
