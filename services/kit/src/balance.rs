//! Choosing an instance for each call: least outstanding requests among the healthy instances
//! discovery names, with outlier ejection as Envoy does it. Pure bookkeeping over instants passed
//! in, so that tests drive it with paused time.

use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// Failures in a row (no answer, or 5xx) that take an instance out of rotation.
pub const EJECT_AFTER: u32 = 5;
/// How long a first ejection lasts; the n-th lasts n times this, at most [`MAX_EJECTION`].
pub const BASE_EJECTION: Duration = Duration::from_secs(30);
pub const MAX_EJECTION: Duration = Duration::from_secs(300);
/// At most this share of a service's instances is ejected at once; at least one instance always
/// stays in rotation, however many fail.
pub const MAX_EJECTED_PERCENT: usize = 10;

/// How a call to an instance ended, as far as its health goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer below 500 (a 4xx is the caller's problem, not the instance's).
    Answered,
    /// No answer, or a 5xx.
    Failed,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    outstanding: u32,
    failures_in_a_row: u32,
    times_ejected: u32,
    ejected_until: Option<Instant>,
    /// Back from ejection: its next call is a probe; one failure ejects it again at once.
    on_probation: bool,
}

/// Per-instance bookkeeping of one caller. Instances are named by their instance id.
#[derive(Debug, Default)]
pub struct Balancer {
    stats: HashMap<String, Stats>,
    /// Breaks ties between equally loaded instances in turn.
    turn: usize,
}

impl Balancer {
    /// The index in `candidates` to call now, skipping `exclude` (an instance that just failed
    /// this request) while another remains. `None` only when `candidates` is empty.
    pub fn pick(
        &mut self,
        candidates: &[impl AsRef<str>],
        exclude: Option<&str>,
        now: Instant,
    ) -> Option<usize> {
        self.expire(now);
        let n = candidates.len();
        let name = |i: usize| candidates[i].as_ref();
        // Chosen without building lists: this runs for every call a service makes.
        let others = (0..n).any(|i| Some(name(i)) != exclude);
        let usable = |i: usize| !others || Some(name(i)) != exclude;
        // Everything ejected (every instance failing): better to try one than to fail outright.
        let rotating = (0..n).any(|i| usable(i) && !self.is_ejected(name(i)));
        let eligible = |i: usize| usable(i) && (!rotating || !self.is_ejected(name(i)));
        let load = |i: usize| self.stats.get(name(i)).map_or(0, |s| s.outstanding);
        let least = (0..n).filter(|&i| eligible(i)).map(load).min()?;
        let tied = || (0..n).filter(move |&i| eligible(i) && load(i) == least);
        let turn = self.turn.wrapping_add(1);
        let chosen = tied().nth(turn % tied().count());
        self.turn = turn;
        chosen
    }

    /// A call to `instance` starts.
    pub fn start(&mut self, instance: &str) {
        self.stats_of(instance).outstanding += 1;
    }

    /// The bookkeeping of `instance`, made on its first call: the name is copied once, not at
    /// every call.
    fn stats_of(&mut self, instance: &str) -> &mut Stats {
        if !self.stats.contains_key(instance) {
            self.stats.insert(instance.to_string(), Stats::default());
        }
        self.stats.get_mut(instance).expect("inserted above")
    }

    /// A call to `instance` ended. `peers` is how many instances the service has now: ejection
    /// never takes more than [`MAX_EJECTED_PERCENT`] of them, nor the last one in rotation.
    pub fn finish(&mut self, instance: &str, outcome: Outcome, peers: usize, now: Instant) {
        let ejected_now = self.ejected_count();
        let s = self.stats_of(instance);
        s.outstanding = s.outstanding.saturating_sub(1);
        match outcome {
            Outcome::Answered => {
                s.failures_in_a_row = 0;
                s.on_probation = false;
            }
            Outcome::Failed => {
                s.failures_in_a_row += 1;
                let due = s.on_probation || s.failures_in_a_row >= EJECT_AFTER;
                let room = ejected_now < max_ejected(peers);
                if due && room && s.ejected_until.is_none() {
                    s.times_ejected += 1;
                    let lasts = (BASE_EJECTION * s.times_ejected).min(MAX_EJECTION);
                    s.ejected_until = Some(now + lasts);
                    s.on_probation = false;
                }
            }
        }
    }

    /// A call to `instance` was given up by its caller before it ended: it no longer counts as
    /// outstanding, and says nothing of the instance's health.
    pub fn abandon(&mut self, instance: &str) {
        if let Some(s) = self.stats.get_mut(instance) {
            s.outstanding = s.outstanding.saturating_sub(1);
        }
    }

    /// Whether `instance` is out of rotation now.
    pub fn is_ejected(&self, instance: &str) -> bool {
        self.stats
            .get(instance)
            .is_some_and(|s| s.ejected_until.is_some())
    }

    /// Ends ejections that are over: the instance comes back on probation.
    fn expire(&mut self, now: Instant) {
        for s in self.stats.values_mut() {
            if s.ejected_until.is_some_and(|until| until <= now) {
                s.ejected_until = None;
                s.failures_in_a_row = 0;
                s.on_probation = true;
            }
        }
    }

    fn ejected_count(&self) -> usize {
        self.stats
            .values()
            .filter(|s| s.ejected_until.is_some())
            .count()
    }
}

/// At most this many of `peers` instances may be ejected at once: 10%, but at least one, and
/// never every one.
fn max_ejected(peers: usize) -> usize {
    (peers * MAX_EJECTED_PERCENT / 100)
        .max(1)
        .min(peers.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: [&str; 3] = ["p-1", "p-2", "p-3"];

    #[test]
    fn the_least_loaded_instance_is_picked_and_ties_take_turns() {
        let now = Instant::now();
        let mut b = Balancer::default();
        b.start("p-1");
        b.start("p-1");
        b.start("p-2");
        assert_eq!(b.pick(&THREE, None, now), Some(2));
        b.start("p-3");
        // p-2 and p-3 have one each: both get turns, p-1 none.
        let picks: Vec<_> = (0..4).map(|_| b.pick(&THREE, None, now).unwrap()).collect();
        assert!(
            picks.contains(&1) && picks.contains(&2) && !picks.contains(&0),
            "{picks:?}"
        );
        assert_eq!(b.pick(&[] as &[&str], None, now), None);
    }

    #[test]
    fn a_retry_goes_to_another_instance_while_there_is_one() {
        let now = Instant::now();
        let mut b = Balancer::default();
        for _ in 0..6 {
            assert_ne!(b.pick(&THREE, Some("p-2"), now), Some(1));
        }
        assert_eq!(b.pick(&["p-2"], Some("p-2"), now), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_a_row_eject_for_a_while_then_a_probe_decides() {
        let mut b = Balancer::default();
        let fail = |b: &mut Balancer| {
            b.start("p-2");
            b.finish("p-2", Outcome::Failed, 3, Instant::now());
        };
        for _ in 0..EJECT_AFTER - 1 {
            fail(&mut b);
        }
        assert!(!b.is_ejected("p-2"), "four failures are not enough");
        fail(&mut b);
        assert!(b.is_ejected("p-2"));
        for _ in 0..10 {
            assert_ne!(b.pick(&THREE, None, Instant::now()), Some(1));
        }
        tokio::time::advance(BASE_EJECTION).await;
        // Back on probation: in rotation, and one failure ejects it again, for twice as long.
        assert!(b.pick(&THREE, None, Instant::now()).is_some());
        assert!(!b.is_ejected("p-2"));
        fail(&mut b);
        assert!(b.is_ejected("p-2"));
        tokio::time::advance(BASE_EJECTION).await;
        b.pick(&THREE, None, Instant::now());
        assert!(b.is_ejected("p-2"), "the second ejection lasts 60 s");
        tokio::time::advance(BASE_EJECTION).await;
        b.pick(&THREE, None, Instant::now());
        assert!(!b.is_ejected("p-2"));
        // A probe that is answered ends probation: it takes five failures again.
        b.start("p-2");
        b.finish("p-2", Outcome::Answered, 3, Instant::now());
        fail(&mut b);
        assert!(!b.is_ejected("p-2"));
    }

    #[test]
    fn one_instance_always_stays_in_rotation() {
        let now = Instant::now();
        let mut b = Balancer::default();
        for instance in THREE {
            for _ in 0..EJECT_AFTER {
                b.start(instance);
                b.finish(instance, Outcome::Failed, 3, now);
            }
        }
        // Of three, 10% rounds up to one: only the first to fail five times is ejected.
        let ejected = THREE.iter().filter(|i| b.is_ejected(i)).count();
        assert_eq!(ejected, 1);
        // A lone instance is never ejected.
        let mut lone = Balancer::default();
        for _ in 0..EJECT_AFTER * 2 {
            lone.start("u-1");
            lone.finish("u-1", Outcome::Failed, 1, now);
        }
        assert!(!lone.is_ejected("u-1"));
        assert_eq!(lone.pick(&["u-1"], None, now), Some(0));
    }
}
