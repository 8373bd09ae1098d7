//! The open-file limit: msctl raises its own to what the system allows and gives services the
//! one they were started with, as Go's runtime and os/exec do.
//!
//! The supervisor holds four descriptors per instance (two pipes, the log file, the child's
//! handle), so 64 replicas of four services pass 1,024, the soft limit most Linux logins start
//! with, while their hard limit is far higher. Services keep the limit the user gave: some
//! programs still use `select`, which fails past descriptor 1,023, or close every descriptor
//! up to the limit before they exec.

use std::sync::atomic::{AtomicU64, Ordering};

/// Where `up -d` tells the supervisor it starts what limit the user gave, since the supervisor
/// inherits the raised one.
pub const ORIGINAL_ENV: &str = "MSCTL_ORIGINAL_NOFILE";

/// The most msctl raises its soft limit to: plenty, and cheap for a service that does close every
/// descriptor up to the limit, should one inherit it.
const RAISED_AT_MOST: u64 = 1 << 20;

/// The soft limit msctl was started with; 0 until `raise` ran (then nothing is restored).
static ORIGINAL: AtomicU64 = AtomicU64::new(0);

/// Raises this process's soft open-file limit towards its hard limit, once, at start.
#[cfg(unix)]
pub fn raise() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let original = std::env::var(ORIGINAL_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v <= soft)
        .unwrap_or(soft);
    let wanted = raised(soft, hard);
    if wanted > soft && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_err() {
        return;
    }
    ORIGINAL.store(original, Ordering::Relaxed);
}

#[cfg(not(unix))]
pub fn raise() {}

/// The soft limit to run with, given the current soft and hard ones.
fn raised(soft: u64, hard: u64) -> u64 {
    soft.max(hard.min(RAISED_AT_MOST))
}

/// The soft limit msctl was started with, for the services it starts; `None` if it is the
/// current one.
pub fn original() -> Option<u64> {
    match ORIGINAL.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// Gives a child about to exec the original soft limit back. Called between fork and exec:
/// `setrlimit` is async-signal-safe.
#[cfg(unix)]
pub fn restore_in_child(original: u64) -> std::io::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if original < soft {
        setrlimit(Resource::RLIMIT_NOFILE, original, hard)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_rises_to_the_hard_one_within_reason_and_never_falls() {
        assert_eq!(raised(1024, 524_288), 524_288);
        assert_eq!(raised(1024, u64::MAX), RAISED_AT_MOST);
        assert_eq!(raised(1024, 1024), 1024);
        assert_eq!(raised(2_000_000, u64::MAX), 2_000_000);
    }
}
