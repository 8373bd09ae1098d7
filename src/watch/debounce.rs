//! Debouncing file events: a burst of saves becomes one batch, closed once the files have been
//! quiet for a moment, so that one burst gives one build.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long files must stay quiet before a batch closes.
pub const QUIET: Duration = Duration::from_millis(200);
/// A batch closes after this long even if saves keep coming, so that a tool that writes
/// without pause (a generator in a loop) cannot hold off every rebuild.
pub const LONGEST: Duration = Duration::from_secs(3);

/// The changed files of one burst.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub paths: BTreeSet<PathBuf>,
    /// From the first relevant event to the close of the batch.
    pub waited: Duration,
}

/// Waits for the next burst of events for which `relevant` holds and returns it once it has
/// been quiet for `quiet` (or has lasted `longest`); `None` when the sender is gone.
/// Irrelevant events (build output, editor swap files) neither open nor prolong a batch.
pub async fn next_batch(
    rx: &mut mpsc::UnboundedReceiver<PathBuf>,
    quiet: Duration,
    longest: Duration,
    mut relevant: impl FnMut(&Path) -> bool,
) -> Option<Batch> {
    let first = loop {
        let path = rx.recv().await?;
        if relevant(&path) {
            break path;
        }
    };
    let opened = Instant::now();
    let mut paths = BTreeSet::from([first]);
    let mut deadline = opened + quiet;
    loop {
        let limit = deadline.min(opened + longest);
        match tokio::time::timeout_at(limit, rx.recv()).await {
            Ok(Some(path)) => {
                if relevant(&path) {
                    paths.insert(path);
                    deadline = Instant::now() + quiet;
                }
            }
            // The watcher is gone: what was gathered still counts.
            Ok(None) | Err(_) => break,
        }
    }
    Some(Batch {
        paths,
        waited: opened.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relevant(p: &Path) -> bool {
        !p.to_string_lossy().contains("/target/")
    }

    #[tokio::test(start_paused = true)]
    async fn twenty_saves_in_100_ms_make_one_batch() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let saver = tokio::spawn(async move {
            for i in 0..20 {
                tx.send(PathBuf::from(format!("/p/src/f{}.rs", i % 3)))
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            tx.send(PathBuf::from("/p/src/later.rs")).unwrap();
        });
        let batch = next_batch(&mut rx, QUIET, LONGEST, relevant).await.unwrap();
        assert_eq!(batch.paths.len(), 3);
        // The last save came ~95 ms after the first; the batch closed QUIET after it.
        assert!(
            batch.waited >= Duration::from_millis(290) && batch.waited < Duration::from_millis(320),
            "{:?}",
            batch.waited
        );
        let next = next_batch(&mut rx, QUIET, LONGEST, relevant).await.unwrap();
        assert_eq!(
            next.paths,
            BTreeSet::from([PathBuf::from("/p/src/later.rs")])
        );
        saver.await.unwrap();
        assert_eq!(next_batch(&mut rx, QUIET, LONGEST, relevant).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn irrelevant_events_neither_open_nor_prolong_a_batch() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            tx.send(PathBuf::from("/p/target/debug/x")).unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send(PathBuf::from("/p/src/a.rs")).unwrap();
            // Build output keeps coming; it must not hold the batch open.
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                tx.send(PathBuf::from("/p/target/debug/y")).unwrap();
            }
        });
        let started = Instant::now();
        let batch = next_batch(&mut rx, QUIET, LONGEST, relevant).await.unwrap();
        assert_eq!(batch.paths, BTreeSet::from([PathBuf::from("/p/src/a.rs")]));
        assert_eq!(batch.waited, QUIET);
        assert_eq!(started.elapsed(), Duration::from_secs(1) + QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn endless_saves_still_give_a_batch() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                if tx.send(PathBuf::from("/p/src/gen.rs")).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let batch = next_batch(&mut rx, QUIET, LONGEST, relevant).await.unwrap();
        assert_eq!(batch.waited, LONGEST);
    }
}
