//! The life of one instance as a pure state machine: `step(machine, event, policy, now)` gives
//! the next machine and the actions to carry out. No I/O happens here, so every rule (backoff,
//! restart limit, health, a start during a start, a stop during a start) is unit-tested with
//! tokio's paused clock; the runner in `instance.rs` carries out the actions.

use crate::config::RestartPolicy;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// Where an instance is. A pid exists exactly where a process does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Created, never asked to start.
    Idle,
    /// About to spawn; the runner answers `Spawned` or `SpawnFailed` at once, so no one outside
    /// ever sees this state.
    Launching { requested: bool, attempt: u32 },
    /// Spawned, waiting for its first successful health check.
    Starting {
        pid: u32,
        addr: SocketAddr,
        deadline: Instant,
        /// Asked for by a person or `up`: a failure is reported, not retried.
        requested: bool,
        /// Which try at a free port this is (auto ports only).
        attempt: u32,
        /// What the last health check found, for the report if the start times out.
        last_check: Option<String>,
    },
    Healthy {
        pid: u32,
        addr: SocketAddr,
        since: Instant,
        /// Failed checks in a row, fewer than `unhealthy_after`.
        failures: u32,
        /// The check that made it healthy, in words (`200 in 2 ms`).
        summary: String,
    },
    /// Failing its health checks; restarted unless the policy is `no`.
    Unhealthy {
        pid: u32,
        addr: SocketAddr,
        since: Instant,
        failures: u32,
        reason: String,
    },
    /// SIGTERM sent; what follows once the process is gone is `then`.
    Stopping {
        pid: u32,
        addr: SocketAddr,
        /// When SIGKILL follows; `None` once it has been sent.
        kill_at: Option<Instant>,
        then: Then,
    },
    /// Exited or unhealthy; the next start is due at `until`.
    BackingOff { until: Instant, reason: String },
    /// Stopped on request, or exited under a policy that does not restart it.
    Stopped { reason: String },
    /// A job that ran to its end and exited 0: what depends on it may start.
    Completed { reason: String },
    /// Could not start, or crashed more often than `max_restarts` allows.
    Failed { reason: String },
}

/// What a stopping instance does once its process is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Stay stopped: `msctl stop`, `down`.
    Stop,
    /// Start again at once: `msctl restart`, or a start that came while stopping.
    Start { counts_as_restart: bool },
    /// It crashed in effect (unhealthy): restart with backoff, or give up.
    Crash {
        reason: String,
        healthy_for: Duration,
    },
    /// It never became healthy.
    NotReady { reason: String, requested: bool },
    /// Its port turned out to be someone else's: try again on a fresh one.
    Relaunch { requested: bool, attempt: u32 },
}

/// What happens to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A person, `up` or `start` asks for it to run.
    Start,
    Stop,
    Restart,
    Spawned {
        pid: u32,
        addr: SocketAddr,
    },
    SpawnFailed {
        reason: String,
    },
    /// The first successful health check.
    Ready {
        summary: String,
    },
    /// A health check while starting that did not pass (not answering yet is normal then).
    NotReady {
        reason: String,
    },
    /// A later health check.
    ProbeOk,
    ProbeFailed {
        reason: String,
    },
    /// The port answers for another process: ours never bound it.
    Impostor {
        reason: String,
    },
    /// The port was taken between the pick and the service's bind, and the process exited.
    PortLost,
    Exited {
        reason: String,
        success: bool,
    },
    /// The machine's deadline passed: start timeout, backoff over, or time to SIGKILL.
    Deadline,
}

/// What the runner must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pick a port and spawn; answer with `Spawned` or `SpawnFailed`.
    Spawn,
    /// Mark the instance `stopping` (already done by the record of the new state), then SIGTERM
    /// and SIGCONT to its process group.
    Terminate { pid: u32 },
    /// SIGKILL to its process group.
    Kill { pid: u32 },
    /// The outcome of a start or restart is known: wake those waiting for it.
    Settle,
    /// Everything asked to stop it may go on: the process they asked to stop is gone (and, unless
    /// a later start overrode the stop, no other has been spawned).
    AckStops,
    /// Tell the user.
    Report(Report),
}

/// What the user is told, as progress events and lines in the instance's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Starting,
    Healthy {
        startup: Duration,
    },
    /// A job ran to its end, successfully, in this long.
    Completed {
        took: Duration,
    },
    /// A start asked for did not succeed: `up` fails with this.
    Failed {
        reason: String,
    },
    Exited {
        reason: String,
    },
    Unhealthy {
        reason: String,
    },
    Restarting {
        after: Duration,
        restarts: u32,
    },
    GaveUp {
        reason: String,
    },
    Stopping,
    Stopped,
    /// A line of msctl's own in the instance's log.
    Note(String),
}

/// The settings of msctl.toml that the rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub restart: RestartPolicy,
    pub max_restarts: u32,
    pub unhealthy_after: u32,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    /// Whether the port is picked anew on each start, so that a lost port can be retried.
    pub auto_port: bool,
    /// A job: it is ready when it exits 0, not when a health check passes.
    pub job: bool,
}

/// A healthy spell this long forgives earlier crashes: the backoff starts over.
pub const FORGIVE_AFTER: Duration = Duration::from_secs(10);
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Fresh ports an auto-port instance may try when another process takes its port first.
pub const PORT_ATTEMPTS: u32 = 3;

/// The state and the counters that outlive one run of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub state: State,
    /// Every restart, for `ps`.
    pub restarts: u32,
    /// Crashes since the last healthy spell of `FORGIVE_AFTER`, for the backoff and the limit.
    pub in_a_row: u32,
    /// When the current start began, for its start-up time.
    pub launched: Option<Instant>,
}

impl Default for Machine {
    fn default() -> Self {
        Self {
            state: State::Idle,
            restarts: 0,
            in_a_row: 0,
            launched: None,
        }
    }
}

impl State {
    /// The running process, if there is one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Starting { pid, .. }
            | Self::Healthy { pid, .. }
            | Self::Unhealthy { pid, .. }
            | Self::Stopping { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Starting { addr, .. }
            | Self::Healthy { addr, .. }
            | Self::Unhealthy { addr, .. }
            | Self::Stopping { addr, .. } => Some(*addr),
            _ => None,
        }
    }

    /// When the machine wants a `Deadline` event.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Self::Starting { deadline, .. } => Some(*deadline),
            Self::BackingOff { until, .. } => Some(*until),
            Self::Stopping { kill_at, .. } => *kill_at,
            _ => None,
        }
    }

    /// Whether health checks run: readiness while starting, liveness while up.
    pub fn probing(&self) -> bool {
        matches!(
            self,
            Self::Starting { .. } | Self::Healthy { .. } | Self::Unhealthy { .. }
        )
    }
}

/// The next machine, and what to do to get there.
pub fn step(m: &Machine, event: Event, policy: &Policy, now: Instant) -> (Machine, Vec<Action>) {
    let mut next = m.clone();
    let mut actions = Vec::new();
    use Event as E;
    use State as S;
    match (&m.state, event) {
        // --- asked to run ---
        (
            S::Idle | S::Stopped { .. } | S::Failed { .. } | S::Completed { .. },
            E::Start | E::Restart,
        ) => {
            next.in_a_row = 0;
            launch(&mut next, &mut actions, true, 1, now);
        }
        (S::BackingOff { .. }, E::Start | E::Restart) => {
            launch(&mut next, &mut actions, true, 1, now);
        }
        // A start while starting is the same start: its waiter gets this one's outcome.
        (S::Starting { .. }, E::Start) => {}
        // Already running: the waiter's answer is that it is.
        (S::Healthy { .. } | S::Unhealthy { .. }, E::Start) => actions.push(Action::Settle),
        (S::Starting { pid, addr, .. }, E::Restart)
        | (S::Healthy { pid, addr, .. }, E::Restart)
        | (S::Unhealthy { pid, addr, .. }, E::Restart) => {
            terminate(
                &mut next,
                &mut actions,
                *pid,
                *addr,
                Then::Start {
                    counts_as_restart: true,
                },
                policy,
                now,
            );
        }
        (S::Stopping { then, .. }, E::Start | E::Restart) => {
            // Stopping for good becomes stopping to start again; a restart already planned stays.
            if matches!(then, Then::Stop) {
                if let S::Stopping { then, .. } = &mut next.state {
                    *then = Then::Start {
                        counts_as_restart: false,
                    };
                }
            }
        }

        // --- asked to stop ---
        (S::Idle | S::Stopped { .. } | S::Failed { .. } | S::Completed { .. }, E::Stop) => {
            actions.push(Action::AckStops)
        }
        (S::BackingOff { .. }, E::Stop) => {
            next.state = S::Stopped {
                reason: "stopped on request".into(),
            };
            actions.extend([Action::Settle, Action::AckStops]);
        }
        (S::Starting { pid, addr, .. }, E::Stop)
        | (S::Healthy { pid, addr, .. }, E::Stop)
        | (S::Unhealthy { pid, addr, .. }, E::Stop) => {
            terminate(
                &mut next,
                &mut actions,
                *pid,
                *addr,
                Then::Stop,
                policy,
                now,
            );
        }
        (S::Stopping { .. }, E::Stop) => {
            if let S::Stopping { then, .. } = &mut next.state {
                *then = Then::Stop;
            }
        }

        // --- spawning ---
        (S::Launching { requested, attempt }, E::Spawned { pid, addr }) => {
            next.state = S::Starting {
                pid,
                addr,
                deadline: now + policy.start_timeout,
                requested: *requested,
                attempt: *attempt,
                last_check: None,
            };
            actions.push(Action::Report(Report::Starting));
        }
        (S::Launching { requested, .. }, E::SpawnFailed { reason }) => {
            not_ready(&mut next, &mut actions, reason, *requested, policy, now);
        }

        // --- starting ---
        (S::Starting { pid, addr, .. }, E::Ready { summary }) => {
            let startup = m.launched.map(|t| now - t).unwrap_or_default();
            next.state = S::Healthy {
                pid: *pid,
                addr: *addr,
                since: now,
                failures: 0,
                summary,
            };
            actions.extend([Action::Report(Report::Healthy { startup }), Action::Settle]);
        }
        (S::Starting { .. }, E::NotReady { reason }) => {
            if let S::Starting { last_check, .. } = &mut next.state {
                *last_check = Some(reason);
            }
        }
        (
            S::Starting {
                pid,
                addr,
                requested,
                last_check,
                ..
            },
            E::Deadline,
        ) => {
            let then = Then::NotReady {
                reason: format!(
                    "{} within {}{}",
                    if policy.job {
                        "did not finish"
                    } else {
                        "not healthy"
                    },
                    super::health::ms(policy.start_timeout),
                    last_check
                        .as_ref()
                        .map(|c| format!("; the last health check: {c}"))
                        .unwrap_or_default()
                ),
                requested: *requested,
            };
            terminate(&mut next, &mut actions, *pid, *addr, then, policy, now);
        }
        (
            S::Starting {
                pid,
                addr,
                requested,
                attempt,
                ..
            },
            E::Impostor { reason },
        ) => {
            let then = if policy.auto_port && *attempt < PORT_ATTEMPTS {
                actions.push(Action::Report(Report::Note(format!(
                    "{reason}; trying another port"
                ))));
                Then::Relaunch {
                    requested: *requested,
                    attempt: attempt + 1,
                }
            } else {
                Then::NotReady {
                    reason,
                    requested: *requested,
                }
            };
            terminate(&mut next, &mut actions, *pid, *addr, then, policy, now);
        }
        (
            S::Starting {
                pid,
                requested,
                attempt,
                ..
            },
            E::PortLost,
        ) if policy.auto_port && *attempt < PORT_ATTEMPTS => {
            actions.push(Action::Kill { pid: *pid });
            actions.push(Action::Report(Report::Note(
                "the port was taken before the service could bind it; trying another".into(),
            )));
            launch(&mut next, &mut actions, *requested, attempt + 1, now);
        }
        (S::Starting { pid, requested, .. }, E::PortLost) => {
            actions.push(Action::Kill { pid: *pid });
            let reason = "its port was taken by another process".to_string();
            not_ready(&mut next, &mut actions, reason, *requested, policy, now);
        }
        (
            S::Starting { pid, .. },
            E::Exited {
                reason,
                success: true,
            },
        ) if policy.job => {
            // Whatever the job left running in its group goes with it.
            actions.push(Action::Kill { pid: *pid });
            let took = m.launched.map(|t| now - t).unwrap_or_default();
            next.state = S::Completed { reason };
            next.in_a_row = 0;
            actions.extend([
                Action::Report(Report::Completed { took }),
                Action::Settle,
                Action::AckStops,
            ]);
        }
        (S::Starting { pid, requested, .. }, E::Exited { reason, .. }) => {
            // Whatever the service left running in its group goes with it.
            actions.push(Action::Kill { pid: *pid });
            let reason = if policy.job {
                format!("the job {reason}")
            } else {
                format!("{reason} before it was healthy")
            };
            not_ready(&mut next, &mut actions, reason, *requested, policy, now);
        }

        // --- up ---
        (S::Healthy { failures, .. }, E::ProbeOk) if *failures > 0 => {
            if let S::Healthy { failures, .. } = &mut next.state {
                *failures = 0;
            }
        }
        (S::Unhealthy { pid, addr, .. }, E::ProbeOk) => {
            next.state = S::Healthy {
                pid: *pid,
                addr: *addr,
                since: now,
                failures: 0,
                summary: "recovered".into(),
            };
            actions.push(Action::Report(Report::Note("healthy again".into())));
        }
        (
            S::Healthy {
                pid,
                addr,
                since,
                failures,
                ..
            },
            E::ProbeFailed { reason },
        )
        | (
            S::Unhealthy {
                pid,
                addr,
                since,
                failures,
                ..
            },
            E::ProbeFailed { reason },
        ) => {
            let failures = failures + 1;
            let reason = format!("{failures} failed health checks in a row; last: {reason}");
            if failures < policy.unhealthy_after {
                if let S::Healthy { failures: f, .. } = &mut next.state {
                    *f = failures;
                }
            } else {
                if matches!(m.state, S::Healthy { .. }) {
                    actions.push(Action::Report(Report::Unhealthy {
                        reason: reason.clone(),
                    }));
                }
                if policy.restart == RestartPolicy::No {
                    // Left running, and routed around, until it recovers or someone acts.
                    next.state = S::Unhealthy {
                        pid: *pid,
                        addr: *addr,
                        since: *since,
                        failures,
                        reason,
                    };
                } else {
                    let then = Then::Crash {
                        reason,
                        healthy_for: now - *since,
                    };
                    terminate(&mut next, &mut actions, *pid, *addr, then, policy, now);
                }
            }
        }
        (
            S::Healthy { pid, since, .. } | S::Unhealthy { pid, since, .. },
            E::Exited { reason, success },
        ) => {
            actions.push(Action::Kill { pid: *pid });
            actions.push(Action::Report(Report::Exited {
                reason: reason.clone(),
            }));
            if now - *since >= FORGIVE_AFTER {
                next.in_a_row = 0;
            }
            let restart = match policy.restart {
                RestartPolicy::No => false,
                RestartPolicy::OnFailure => !success,
                RestartPolicy::Always => true,
            };
            if restart {
                crashed(&mut next, &mut actions, reason, policy, now);
            } else {
                next.state = S::Stopped { reason };
                actions.push(Action::AckStops);
            }
        }

        // --- stopping ---
        (S::Stopping { pid, .. }, E::Deadline) => {
            actions.push(Action::Report(Report::Note(format!(
                "did not stop within {}; killing it",
                super::health::ms(policy.stop_timeout)
            ))));
            actions.push(Action::Kill { pid: *pid });
            if let S::Stopping { kill_at, .. } = &mut next.state {
                *kill_at = None;
            }
        }
        (S::Stopping { pid, then, .. }, E::Exited { .. }) => {
            // Whatever the service left running in its group goes with it.
            actions.push(Action::Kill { pid: *pid });
            actions.push(Action::Report(Report::Stopped));
            match then.clone() {
                Then::Stop => {
                    next.state = S::Stopped {
                        reason: "stopped on request".into(),
                    };
                    actions.extend([Action::Settle, Action::AckStops]);
                }
                Then::Start { counts_as_restart } => {
                    if counts_as_restart {
                        next.restarts += 1;
                    }
                    next.in_a_row = 0;
                    // A stop asked before a start that overrode it has what it waited for: the
                    // process it asked to stop is gone. The start's process is a new one.
                    actions.push(Action::AckStops);
                    launch(&mut next, &mut actions, true, 1, now);
                }
                Then::Crash {
                    reason,
                    healthy_for,
                } => {
                    if healthy_for >= FORGIVE_AFTER {
                        next.in_a_row = 0;
                    }
                    crashed(&mut next, &mut actions, reason, policy, now);
                }
                Then::NotReady { reason, requested } => {
                    not_ready(&mut next, &mut actions, reason, requested, policy, now);
                }
                Then::Relaunch { requested, attempt } => {
                    launch(&mut next, &mut actions, requested, attempt, now);
                }
            }
        }

        // --- waiting to restart ---
        (S::BackingOff { .. }, E::Deadline) => launch(&mut next, &mut actions, false, 1, now),

        // Anything else is news from an earlier run (a probe answered after the process
        // exited, a deadline already acted on): nothing to do.
        _ => {}
    }
    (next, actions)
}

fn launch(
    next: &mut Machine,
    actions: &mut Vec<Action>,
    requested: bool,
    attempt: u32,
    now: Instant,
) {
    next.state = State::Launching { requested, attempt };
    next.launched = Some(now);
    actions.push(Action::Spawn);
}

fn terminate(
    next: &mut Machine,
    actions: &mut Vec<Action>,
    pid: u32,
    addr: SocketAddr,
    then: Then,
    policy: &Policy,
    now: Instant,
) {
    next.state = State::Stopping {
        pid,
        addr,
        kill_at: Some(now + policy.stop_timeout),
        then,
    };
    actions.push(Action::Report(Report::Stopping));
    actions.push(Action::Terminate { pid });
}

/// A start that did not become healthy: reported when someone asked for it, else handled as a
/// crash.
fn not_ready(
    next: &mut Machine,
    actions: &mut Vec<Action>,
    reason: String,
    requested: bool,
    policy: &Policy,
    now: Instant,
) {
    if requested {
        next.state = State::Failed {
            reason: reason.clone(),
        };
        actions.extend([
            Action::Report(Report::Failed { reason }),
            Action::Settle,
            Action::AckStops,
        ]);
    } else {
        crashed(next, actions, reason, policy, now);
    }
}

/// Restart with backoff, or give up once the limit is reached.
fn crashed(
    next: &mut Machine,
    actions: &mut Vec<Action>,
    reason: String,
    policy: &Policy,
    now: Instant,
) {
    if next.in_a_row >= policy.max_restarts {
        let why = format!(
            "restart limit ({}) reached; last: {reason}",
            policy.max_restarts
        );
        next.state = State::Failed {
            reason: why.clone(),
        };
        actions.extend([
            Action::Report(Report::GaveUp { reason: why }),
            Action::Settle,
            Action::AckStops,
        ]);
        return;
    }
    let delay = backoff(next.in_a_row);
    next.in_a_row += 1;
    next.restarts += 1;
    next.state = State::BackingOff {
        until: now + delay,
        reason,
    };
    actions.extend([
        Action::Report(Report::Restarting {
            after: delay,
            restarts: next.restarts,
        }),
        Action::AckStops,
    ]);
}

/// 100 ms, doubling with each crash in a row, at most 5 s.
pub fn backoff(in_a_row: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << in_a_row.min(16))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn policy() -> Policy {
        Policy {
            restart: RestartPolicy::OnFailure,
            max_restarts: 5,
            unhealthy_after: 3,
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(5),
            auto_port: true,
            job: false,
        }
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:4000".parse().unwrap()
    }

    /// Feeds `events` one after another; the machine and every action taken.
    fn run(m: Machine, events: Vec<Event>, policy: &Policy) -> (Machine, Vec<Action>) {
        let mut all = Vec::new();
        let mut m = m;
        for e in events {
            let (next, actions) = step(&m, e, policy, Instant::now());
            m = next;
            all.extend(actions);
        }
        (m, all)
    }

    fn spawned(pid: u32) -> Event {
        Event::Spawned { pid, addr: addr() }
    }

    fn healthy(policy: &Policy) -> Machine {
        let (m, actions) = run(
            Machine::default(),
            vec![
                Event::Start,
                spawned(10),
                Event::Ready {
                    summary: "200 in 1 ms".into(),
                },
            ],
            policy,
        );
        assert!(matches!(m.state, State::Healthy { pid: 10, .. }), "{m:?}");
        assert_eq!(actions[0], Action::Spawn);
        assert!(actions.contains(&Action::Settle));
        m
    }

    #[test]
    fn a_job_is_ready_when_it_exits_0_and_runs_again_when_asked() {
        let job = Policy {
            job: true,
            ..policy()
        };
        let (m, actions) = run(Machine::default(), vec![Event::Start, spawned(10)], &job);
        assert!(matches!(m.state, State::Starting { .. }), "{m:?}");
        assert!(
            !actions.contains(&Action::Settle),
            "not ready while it runs"
        );
        let (m, actions) = run(m, vec![exit_0()], &job);
        assert!(matches!(&m.state, State::Completed { reason } if reason == "exited with code 0"));
        assert_eq!(actions[0], Action::Kill { pid: 10 }, "what it left goes");
        assert!(matches!(
            actions[1],
            Action::Report(Report::Completed { .. })
        ));
        assert!(actions.contains(&Action::Settle));
        assert_eq!((m.restarts, m.state.pid()), (0, None));
        // `msctl restart` (or a watch rebuild) runs it again; a stop has nothing to stop.
        let (again, actions) = run(m.clone(), vec![Event::Restart], &job);
        assert!(matches!(
            again.state,
            State::Launching {
                requested: true,
                ..
            }
        ));
        assert_eq!(actions, [Action::Spawn]);
        let (_, actions) = run(m, vec![Event::Stop], &job);
        assert_eq!(actions, [Action::AckStops]);
    }

    #[test]
    fn a_job_that_fails_or_overruns_fails_its_start() {
        let job = Policy {
            job: true,
            ..policy()
        };
        let (m, actions) = run(
            Machine::default(),
            vec![Event::Start, spawned(10), crash()],
            &job,
        );
        assert!(
            matches!(&m.state, State::Failed { reason } if reason == "the job exited with code 1"),
            "{m:?}"
        );
        assert!(actions.contains(&Action::Report(Report::Failed {
            reason: "the job exited with code 1".into()
        })));
        let (m, _) = run(
            Machine::default(),
            vec![Event::Start, spawned(10), Event::Deadline],
            &job,
        );
        assert!(
            matches!(&m.state, State::Stopping { then: Then::NotReady { reason, .. }, .. } if reason == "did not finish within 30000 ms"),
            "{m:?}"
        );
        // A service that is not a job and exits 0 while starting did not start.
        let (m, _) = run(
            Machine::default(),
            vec![Event::Start, spawned(10), exit_0()],
            &policy(),
        );
        assert!(matches!(m.state, State::Failed { .. }), "{m:?}");
    }

    fn crash() -> Event {
        Event::Exited {
            reason: "exited with code 1".into(),
            success: false,
        }
    }

    fn exit_0() -> Event {
        Event::Exited {
            reason: "exited with code 0".into(),
            success: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn crashes_back_off_doubling_up_to_the_cap() {
        let p = policy();
        let mut m = healthy(&p);
        let mut delays = Vec::new();
        for pid in 11..19 {
            let (next, actions) = step(&m, crash(), &p, Instant::now());
            let State::BackingOff { until, .. } = next.state else {
                // The limit (5) is reached on the sixth crash in a row.
                assert!(matches!(next.state, State::Failed { .. }), "{next:?}");
                break;
            };
            delays.push(until - Instant::now());
            assert!(actions.contains(&Action::Report(Report::Restarting {
                after: until - Instant::now(),
                restarts: next.restarts,
            })));
            advance(until - Instant::now()).await;
            let (next, actions) = step(&next, Event::Deadline, &p, Instant::now());
            assert_eq!(actions, vec![Action::Spawn]);
            // The restarted process crashes again once up.
            let (next, _) = run(
                next,
                vec![
                    spawned(pid),
                    Event::Ready {
                        summary: "ok".into(),
                    },
                ],
                &p,
            );
            m = next;
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600]);
        assert_eq!(backoff(10), MAX_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn the_restart_limit_leaves_it_failed_with_the_reason() {
        let p = Policy {
            max_restarts: 2,
            ..policy()
        };
        let mut m = healthy(&p);
        for _ in 0..2 {
            let (next, _) = step(&m, crash(), &p, Instant::now());
            assert!(matches!(next.state, State::BackingOff { .. }));
            advance(Duration::from_secs(5)).await;
            // Crashes again before it is healthy: a crash all the same, since no one asked.
            m = run(next, vec![Event::Deadline, spawned(20), crash()], &p).0;
        }
        let State::Failed { reason } = &m.state else {
            panic!("{m:?}")
        };
        assert_eq!(
            reason,
            "restart limit (2) reached; last: exited with code 1 before it was healthy"
        );
        assert_eq!(m.restarts, 2);
        assert_eq!(m.state.pid(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_healthy_spell_forgives_earlier_crashes() {
        let p = policy();
        let m = healthy(&p);
        let (m, _) = step(&m, crash(), &p, Instant::now());
        advance(Duration::from_millis(100)).await;
        let (m, _) = run(
            m,
            vec![
                Event::Deadline,
                spawned(12),
                Event::Ready {
                    summary: "ok".into(),
                },
            ],
            &p,
        );
        assert_eq!(m.in_a_row, 1);
        advance(FORGIVE_AFTER).await;
        let (m, _) = step(&m, crash(), &p, Instant::now());
        let State::BackingOff { until, .. } = m.state else {
            panic!()
        };
        assert_eq!(
            until - Instant::now(),
            FIRST_BACKOFF,
            "the backoff starts over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failing_checks_make_it_unhealthy_then_it_is_replaced() {
        let p = policy();
        let m = healthy(&p);
        let failed = || Event::ProbeFailed {
            reason: "connection refused".into(),
        };
        let (m, actions) = run(m, vec![failed(), failed()], &p);
        assert!(matches!(m.state, State::Healthy { failures: 2, .. }));
        assert!(actions.is_empty(), "{actions:?}");
        // A success in between starts the count over.
        let (m, _) = run(m, vec![Event::ProbeOk, failed(), failed()], &p);
        assert!(matches!(m.state, State::Healthy { failures: 2, .. }));
        let (m, actions) = step(&m, failed(), &p, Instant::now());
        assert!(matches!(
            &m.state,
            State::Stopping {
                then: Then::Crash { .. },
                kill_at: Some(_),
                ..
            }
        ));
        assert!(
            matches!(&actions[0], Action::Report(Report::Unhealthy { reason }) if reason.starts_with("3 failed health checks in a row; last: connection refused"))
        );
        assert!(actions.contains(&Action::Terminate { pid: 10 }));
        let (m, _) = step(&m, crash(), &p, Instant::now());
        assert!(matches!(m.state, State::BackingOff { .. }));
        assert_eq!(m.restarts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn with_restart_no_an_unhealthy_instance_is_left_running_until_it_recovers() {
        let p = Policy {
            restart: RestartPolicy::No,
            ..policy()
        };
        let m = healthy(&p);
        let failed = || Event::ProbeFailed {
            reason: "timed out".into(),
        };
        let (m, actions) = run(m, vec![failed(), failed(), failed(), failed()], &p);
        assert!(
            matches!(
                m.state,
                State::Unhealthy {
                    pid: 10,
                    failures: 4,
                    ..
                }
            ),
            "{m:?}"
        );
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Terminate { .. }))
        );
        let (m, _) = step(&m, Event::ProbeOk, &p, Instant::now());
        assert!(matches!(m.state, State::Healthy { pid: 10, .. }));
        // And an exit is final.
        let (m, _) = step(&m, crash(), &p, Instant::now());
        assert!(matches!(m.state, State::Stopped { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_start_during_a_start_is_the_same_start() {
        let p = policy();
        let (m, _) = run(Machine::default(), vec![Event::Start, spawned(10)], &p);
        let (same, actions) = step(&m, Event::Start, &p, Instant::now());
        assert_eq!(same, m, "nothing restarts");
        assert!(actions.is_empty());
        let (m, actions) = step(
            &m,
            Event::Ready {
                summary: "ok".into(),
            },
            &p,
            Instant::now(),
        );
        assert!(matches!(m.state, State::Healthy { pid: 10, .. }));
        assert_eq!(m.restarts, 0);
        assert!(actions.contains(&Action::Settle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_a_start_stops_it_and_answers_the_start() {
        let p = policy();
        let (m, _) = run(Machine::default(), vec![Event::Start, spawned(10)], &p);
        let (m, actions) = step(&m, Event::Stop, &p, Instant::now());
        assert!(matches!(
            m.state,
            State::Stopping {
                then: Then::Stop,
                ..
            }
        ));
        assert_eq!(
            actions,
            [
                Action::Report(Report::Stopping),
                Action::Terminate { pid: 10 }
            ]
        );
        // It ignores SIGTERM: SIGKILL follows after stop_timeout.
        advance(p.stop_timeout).await;
        let (m, actions) = step(&m, Event::Deadline, &p, Instant::now());
        assert!(actions.contains(&Action::Kill { pid: 10 }));
        assert_eq!(m.state.deadline(), None);
        let (m, actions) = step(&m, crash(), &p, Instant::now());
        assert!(matches!(m.state, State::Stopped { .. }));
        assert!(actions.contains(&Action::Settle) && actions.contains(&Action::AckStops));
        assert_eq!(m.state.pid(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_start_that_times_out_fails_when_asked_for_and_is_retried_when_not() {
        let p = Policy {
            start_timeout: Duration::from_secs(2),
            ..policy()
        };
        let (m, _) = run(Machine::default(), vec![Event::Start, spawned(10)], &p);
        advance(Duration::from_secs(2)).await;
        let (m, _) = run(m, vec![Event::Deadline, crash()], &p);
        assert_eq!(
            m.state,
            State::Failed {
                reason: "not healthy within 2000 ms".into()
            }
        );
        // After a crash no one asked for the start: it backs off and tries again.
        let m = healthy(&p);
        let (m, _) = step(&m, crash(), &p, Instant::now());
        advance(Duration::from_secs(1)).await;
        let (m, _) = run(m, vec![Event::Deadline, spawned(11)], &p);
        advance(Duration::from_secs(2)).await;
        let (m, _) = run(m, vec![Event::Deadline, crash()], &p);
        assert!(matches!(m.state, State::BackingOff { .. }), "{m:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_start_that_times_out_says_what_the_last_health_check_found() {
        let p = Policy {
            start_timeout: Duration::from_secs(2),
            ..policy()
        };
        let not_ready = |reason: &str| Event::NotReady {
            reason: reason.into(),
        };
        let (m, _) = run(
            Machine::default(),
            vec![
                Event::Start,
                spawned(10),
                not_ready("connection refused"),
                not_ready("GET /health answered 503 Service Unavailable"),
            ],
            &p,
        );
        assert!(matches!(m.state, State::Starting { .. }), "{m:?}");
        advance(Duration::from_secs(2)).await;
        let (m, _) = run(m, vec![Event::Deadline, crash()], &p);
        assert_eq!(
            m.state,
            State::Failed {
                reason: "not healthy within 2000 ms; the last health check: GET /health answered 503 Service Unavailable".into()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_port_is_tried_anew_a_few_times() {
        let p = policy();
        let (m, _) = run(Machine::default(), vec![Event::Start, spawned(10)], &p);
        let (m, actions) = step(&m, Event::PortLost, &p, Instant::now());
        assert!(matches!(m.state, State::Launching { attempt: 2, .. }));
        assert!(actions.contains(&Action::Spawn));
        let (m, _) = run(m, vec![spawned(11), Event::PortLost, spawned(12)], &p);
        let (m, _) = step(&m, Event::PortLost, &p, Instant::now());
        assert!(matches!(m.state, State::Failed { .. }), "{m:?}");
        // A fixed port is not picked anew.
        let fixed = Policy {
            auto_port: false,
            ..policy()
        };
        let (m, _) = run(Machine::default(), vec![Event::Start, spawned(10)], &fixed);
        let (m, _) = step(&m, Event::PortLost, &fixed, Instant::now());
        assert!(matches!(m.state, State::Failed { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn restart_replaces_the_process_and_counts() {
        let p = policy();
        let m = healthy(&p);
        let (m, actions) = step(&m, Event::Restart, &p, Instant::now());
        assert!(actions.contains(&Action::Terminate { pid: 10 }));
        let (m, actions) = step(&m, exit_0(), &p, Instant::now());
        assert!(actions.contains(&Action::Spawn));
        assert_eq!(m.restarts, 1);
        // A stop while stopping to restart wins; a start while stopping for good restarts.
        let (m, _) = run(m, vec![spawned(11), Event::Restart, Event::Stop], &p);
        assert!(matches!(
            m.state,
            State::Stopping {
                then: Then::Stop,
                ..
            }
        ));
        let (m, _) = step(&m, Event::Start, &p, Instant::now());
        assert!(matches!(
            m.state,
            State::Stopping {
                then: Then::Start {
                    counts_as_restart: false
                },
                ..
            }
        ));
        // When the process is gone, the stop that the start overrode is answered, and the
        // start's process spawned: neither waiter is left waiting.
        let (m, actions) = step(&m, exit_0(), &p, Instant::now());
        assert_eq!(actions.last(), Some(&Action::Spawn), "{actions:?}");
        assert!(actions.contains(&Action::AckStops), "{actions:?}");
        assert!(matches!(m.state, State::Launching { .. }));
    }
}
