//! One supervised instance: a task that owns its process and moves it through explicit phases,
//! driven by its health, its exits and the commands it is sent.

use super::events::Event;
use super::health::{ProbeError, Prober, ms};
use super::process;
use super::store::RegistryStore;
use crate::config::{Health, Port, RestartPolicy, Service};
use crate::project::Project;
use msctl_contract::registry::{Instance, InstanceState};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Created, never asked to start.
    Idle,
    Starting,
    Healthy,
    /// Running, but failing its health checks.
    Unhealthy,
    /// Exited or unhealthy; waiting before the next start.
    BackingOff,
    /// Stopped on request, or exited under a policy that does not restart it.
    Stopped,
    /// Could not start, or crashed more often than `max_restarts` allows.
    Failed,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub phase: Phase,
    /// Counts starts, so a waiter can tell this start's outcome from an earlier one's.
    pub generation: u64,
    pub pid: Option<u32>,
    pub address: Option<SocketAddr>,
    pub reason: Option<String>,
    pub startup: Option<Duration>,
    pub restarts: u32,
}

enum Command {
    Start,
    Stop(oneshot::Sender<()>),
    Restart,
}

/// The supervisor's handle on one instance.
#[derive(Debug, Clone)]
pub struct InstanceHandle {
    pub id: String,
    pub service: String,
    tx: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Status>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Start => "Start",
            Command::Stop(_) => "Stop",
            Command::Restart => "Restart",
        })
    }
}

/// What every instance's task shares.
#[derive(Debug, Clone)]
pub struct Shared {
    pub project: Project,
    pub store: Arc<RegistryStore>,
    pub events: mpsc::UnboundedSender<Event>,
    pub prober: Prober,
}

impl InstanceHandle {
    /// Creates the instance's task, idle until started.
    pub fn create(service: Arc<Service>, index: u32, shared: Shared) -> Self {
        let id = format!("{}-{index}", service.name);
        let (tx, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(Status {
            phase: Phase::Idle,
            generation: 0,
            pid: None,
            address: None,
            reason: None,
            startup: None,
            restarts: 0,
        });
        let runner = Runner {
            id: id.clone(),
            service: service.clone(),
            shared,
            rx,
            status: status_tx,
            restarts: 0,
            in_a_row: 0,
            started_at_ms: 0,
        };
        tokio::spawn(runner.run());
        Self {
            id,
            service: service.name.clone(),
            tx,
            status,
        }
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Starts the instance and waits until it is healthy, or failed to become so.
    pub async fn start(&self) -> Result<Duration, String> {
        let before = self.status.borrow().generation;
        let _ = self.tx.send(Command::Start);
        self.settled_after(before).await
    }

    pub async fn restart(&self) -> Result<Duration, String> {
        let before = self.status.borrow().generation;
        let _ = self.tx.send(Command::Restart);
        self.settled_after(before).await
    }

    /// Stops the instance gracefully; returns once its process is gone.
    pub async fn stop(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Command::Stop(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Waits until the instance is healthy, or has failed.
    pub async fn settled(&self) -> Result<Duration, String> {
        self.settled_after(0).await
    }

    async fn settled_after(&self, generation: u64) -> Result<Duration, String> {
        let mut rx = self.status.clone();
        let status = rx
            .wait_for(|s| {
                s.generation > generation
                    && matches!(s.phase, Phase::Healthy | Phase::Failed | Phase::Stopped)
            })
            .await
            .map(|s| s.clone())
            .map_err(|_| "the supervisor is shutting down".to_string())?;
        match status.phase {
            Phase::Healthy => Ok(status.startup.unwrap_or_default()),
            _ => Err(status.reason.unwrap_or_else(|| "stopped".into())),
        }
    }
}

/// How one run of the process ended.
enum Ended {
    /// Stopped on request; the acknowledgement is sent once the process is gone.
    StopRequested(Option<oneshot::Sender<()>>),
    RestartRequested,
    /// Never became healthy.
    NotReady(String),
    Exited {
        reason: String,
        success: bool,
        healthy_for: Duration,
    },
    Unhealthy {
        reason: String,
        healthy_for: Duration,
    },
    /// The supervisor dropped the handle.
    Orphaned,
}

enum Next {
    Start,
    Backoff(Duration),
    /// Wait for a command, in `phase` (Stopped, Failed or Idle).
    Park(Phase),
}

/// A healthy spell this long forgives earlier crashes: the backoff starts over.
const FORGIVE_AFTER: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Fresh ports an auto-port instance may try when another process takes its port first.
const PORT_ATTEMPTS: u32 = 3;

struct Runner {
    id: String,
    service: Arc<Service>,
    shared: Shared,
    rx: mpsc::UnboundedReceiver<Command>,
    status: watch::Sender<Status>,
    restarts: u32,
    in_a_row: u32,
    started_at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Runner {
    async fn run(mut self) {
        let mut next = Next::Park(Phase::Idle);
        // Whether the current run is a start asked for by a person or `up`, whose failure is
        // reported rather than retried.
        let mut requested = true;
        loop {
            next = match next {
                Next::Park(phase) => {
                    self.publish(|s| s.phase = phase);
                    loop {
                        match self.rx.recv().await {
                            None => return,
                            Some(Command::Stop(ack)) => {
                                let _ = ack.send(());
                            }
                            Some(Command::Start | Command::Restart) => break,
                        }
                    }
                    self.in_a_row = 0;
                    requested = true;
                    Next::Start
                }
                Next::Backoff(delay) => {
                    self.publish(|s| {
                        s.phase = Phase::BackingOff;
                        s.pid = None;
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => Next::Start,
                        cmd = self.rx.recv() => match cmd {
                            None => return,
                            Some(Command::Stop(ack)) => {
                                self.stopped("stopped on request");
                                let _ = ack.send(());
                                Next::Park(Phase::Stopped)
                            }
                            Some(Command::Start | Command::Restart) => Next::Start,
                        },
                    }
                }
                Next::Start => {
                    let ended = self.run_once().await;
                    let was_requested = std::mem::replace(&mut requested, false);
                    match ended {
                        Ended::Orphaned => return,
                        Ended::StopRequested(ack) => {
                            self.stopped("stopped on request");
                            if let Some(ack) = ack {
                                let _ = ack.send(());
                            }
                            Next::Park(Phase::Stopped)
                        }
                        Ended::RestartRequested => {
                            self.restarts += 1;
                            requested = true;
                            Next::Start
                        }
                        Ended::NotReady(reason) if was_requested => {
                            self.failed(&reason, true);
                            Next::Park(Phase::Failed)
                        }
                        Ended::NotReady(reason) => self.after_crash(reason),
                        Ended::Exited {
                            reason,
                            success,
                            healthy_for,
                        } => {
                            self.shared
                                .events
                                .send(Event::Exited {
                                    instance: self.id.clone(),
                                    reason: reason.clone(),
                                })
                                .ok();
                            if healthy_for >= FORGIVE_AFTER {
                                self.in_a_row = 0;
                            }
                            match self.service.restart {
                                RestartPolicy::No => {
                                    self.stopped(&reason);
                                    Next::Park(Phase::Stopped)
                                }
                                RestartPolicy::OnFailure if success => {
                                    self.stopped(&reason);
                                    Next::Park(Phase::Stopped)
                                }
                                _ => self.after_crash(reason),
                            }
                        }
                        Ended::Unhealthy {
                            reason,
                            healthy_for,
                        } => {
                            if healthy_for >= FORGIVE_AFTER {
                                self.in_a_row = 0;
                            }
                            self.after_crash(reason)
                        }
                    }
                }
            }
        }
    }

    /// Restart with backoff, or give up once the limit is reached.
    fn after_crash(&mut self, reason: String) -> Next {
        if self.in_a_row >= self.service.max_restarts {
            let why = format!(
                "restart limit ({}) reached; last: {reason}",
                self.service.max_restarts
            );
            self.shared
                .events
                .send(Event::GaveUp {
                    instance: self.id.clone(),
                    reason: why.clone(),
                })
                .ok();
            self.failed(&why, false);
            return Next::Park(Phase::Failed);
        }
        let delay = FIRST_BACKOFF
            .saturating_mul(1 << self.in_a_row.min(16))
            .min(MAX_BACKOFF);
        self.in_a_row += 1;
        self.restarts += 1;
        self.shared
            .events
            .send(Event::Restarting {
                instance: self.id.clone(),
                after_ms: delay.as_millis() as u64,
                restarts: self.restarts,
            })
            .ok();
        self.set_registry(
            InstanceState::Restarting,
            None,
            Some(format!("restarting in {}: {reason}", ms(delay))),
        );
        Next::Backoff(delay)
    }

    fn stopped(&mut self, reason: &str) {
        self.publish(|s| {
            s.pid = None;
            s.reason = Some(reason.to_string());
        });
        self.set_registry(InstanceState::Stopped, None, Some(reason.to_string()));
    }

    fn failed(&mut self, reason: &str, report: bool) {
        self.publish(|s| {
            s.pid = None;
            s.reason = Some(reason.to_string());
        });
        self.set_registry(InstanceState::Failed, None, Some(reason.to_string()));
        // A start can fail before it spawns anything; the new generation tells its waiter that
        // this failure is the answer to it.
        self.publish(|s| {
            s.phase = Phase::Failed;
            s.generation += 1;
        });
        if report {
            let log = self.shared.project.log(&self.id);
            self.shared
                .events
                .send(Event::Failed {
                    instance: self.id.clone(),
                    reason: reason.to_string(),
                    log,
                })
                .ok();
        }
    }

    fn publish(&self, change: impl FnOnce(&mut Status)) {
        self.status.send_modify(|s| {
            change(s);
            s.restarts = self.restarts;
        });
    }

    fn set_registry(
        &self,
        state: InstanceState,
        last_health: Option<String>,
        reason: Option<String>,
    ) {
        let status = self.status.borrow().clone();
        self.shared.store.upsert(
            &self.service.name,
            Instance {
                id: self.id.clone(),
                pid: match state {
                    InstanceState::Stopped | InstanceState::Failed | InstanceState::Restarting => {
                        None
                    }
                    _ => status.pid,
                },
                address: status.address.map(|a| a.to_string()).unwrap_or_default(),
                state,
                started_at_ms: self.started_at_ms,
                restarts: self.restarts,
                last_health,
                reason,
            },
        );
    }

    fn env(&self, addr: SocketAddr) -> Vec<(String, String)> {
        let p = &self.shared.project;
        let mut env: Vec<(String, String)> = vec![
            ("MSCTL_SERVICE".into(), self.service.name.clone()),
            ("MSCTL_INSTANCE".into(), self.id.clone()),
            ("PORT".into(), addr.port().to_string()),
            ("MSCTL_ADDR".into(), addr.to_string()),
            ("MSCTL_REGISTRY".into(), p.registry().display().to_string()),
            (
                "MSCTL_DATA_DIR".into(),
                p.data_dir(&self.service.name).display().to_string(),
            ),
            (
                "MSCTL_TRACE_DIR".into(),
                p.traces_dir().display().to_string(),
            ),
            ("OTEL_SERVICE_NAME".into(), self.service.name.clone()),
            (
                "OTEL_RESOURCE_ATTRIBUTES".into(),
                format!("service.instance.id={}", self.id),
            ),
        ];
        env.extend(self.service.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// The program to run: variables expanded, and a relative path taken from the project folder.
    fn program(&self) -> Result<(PathBuf, Vec<String>), String> {
        let expand = |s: &String| crate::config::expand_vars(s, |k| std::env::var(k).ok());
        let mut argv = self
            .service
            .command
            .iter()
            .map(expand)
            .collect::<Result<Vec<_>, _>>()?;
        let program = argv.remove(0);
        let path = PathBuf::from(&program);
        let path = if path.is_relative() && program.contains('/') {
            self.shared.project.root.join(path)
        } else {
            path
        };
        Ok((path, argv))
    }

    /// Runs the process once: start, wait until ready, then watch it until it ends.
    async fn run_once(&mut self) -> Ended {
        let (program, args) = match self.program() {
            Ok(p) => p,
            Err(e) => return Ended::NotReady(e),
        };
        let data_dir = self.shared.project.data_dir(&self.service.name);
        if let Err(e) = std::fs::create_dir_all(&data_dir) {
            return Ended::NotReady(format!("cannot create {}: {e}", data_dir.display()));
        }
        let mut attempt = 0;
        'attempt: loop {
            attempt += 1;
            let port = match self.service.port {
                Port::Fixed(p) if !crate::ports::is_free(p) => {
                    let holder = crate::ports::holder(p)
                        .map(|h| format!(" by {h}"))
                        .unwrap_or_default();
                    return Ended::NotReady(format!(
                        "port {p} is already taken{holder}; free it, or use `port = \"auto\"`"
                    ));
                }
                Port::Fixed(p) => p,
                Port::Auto => match crate::ports::pick() {
                    Some(p) => p,
                    None => return Ended::NotReady("no free loopback port".into()),
                },
            };
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let mut child =
                match process::spawn(&program, &args, &self.env(addr), &self.shared.project.root) {
                    Ok(c) => c,
                    Err(e) => {
                        return Ended::NotReady(format!("cannot run {}: {e}", program.display()));
                    }
                };
            let pid = child.id().unwrap_or(0);
            let started = Instant::now();
            self.started_at_ms = now_ms();
            self.publish(|s| {
                s.phase = Phase::Starting;
                s.generation += 1;
                s.pid = Some(pid);
                s.address = Some(addr);
                s.reason = None;
                s.startup = None;
            });
            self.set_registry(InstanceState::Starting, None, None);
            self.shared
                .events
                .send(Event::Starting {
                    instance: self.id.clone(),
                })
                .ok();
            self.pump_logs(&mut child);

            let deadline = tokio::time::sleep(self.service.start_timeout);
            tokio::pin!(deadline);
            // A start asked for while this one runs waits for a newer generation than this one.
            let mut joined = false;
            let outcome = loop {
                tokio::select! {
                    ready = wait_ready(&self.shared.prober, &self.service.health, addr, &self.id) => break ready.map(|summary| (summary, started.elapsed())),
                    status = child.wait() => {
                        let reason = status.map(|s| process::describe_exit(&s)).unwrap_or_else(|e| e.to_string());
                        process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                        // Another process took the port between our pick and the service's bind.
                        if self.service.port == Port::Auto && attempt < PORT_ATTEMPTS && !crate::ports::is_free(port) {
                            self.note(&format!("port {port} was taken before the service could bind it; trying another"));
                            continue 'attempt;
                        }
                        return Ended::NotReady(format!("{reason} before it was healthy"));
                    }
                    _ = &mut deadline => break Err(ProbeError::Failed(format!("not healthy within {}", ms(self.service.start_timeout)))),
                    cmd = self.rx.recv() => {
                        // A start while starting is the same start: its waiter gets this outcome.
                        if let Some(Command::Start) = cmd {
                            joined = true;
                            continue;
                        }
                        self.stop_child(&mut child, pid).await;
                        return match cmd {
                            None => Ended::Orphaned,
                            Some(Command::Stop(ack)) => Ended::StopRequested(Some(ack)),
                            Some(Command::Restart | Command::Start) => Ended::RestartRequested,
                        };
                    }
                }
            };
            let (summary, startup) = match outcome {
                Ok(ok) => ok,
                Err(ProbeError::Impostor(why))
                    if self.service.port == Port::Auto && attempt < PORT_ATTEMPTS =>
                {
                    self.note(&format!("{why}; trying another port"));
                    self.stop_child(&mut child, pid).await;
                    continue 'attempt;
                }
                Err(e) => {
                    self.stop_child(&mut child, pid).await;
                    return Ended::NotReady(e.to_string());
                }
            };
            self.publish(|s| {
                s.phase = Phase::Healthy;
                s.startup = Some(startup);
                if joined {
                    s.generation += 1;
                }
            });
            self.set_registry(InstanceState::Healthy, Some(summary), None);
            self.shared
                .events
                .send(Event::Healthy {
                    instance: self.id.clone(),
                    address: addr.to_string(),
                    startup_ms: startup.as_secs_f64() * 1000.0,
                })
                .ok();
            return self.watch(child, pid, addr).await;
        }
    }

    /// Watches a healthy process until it exits, fails its checks, or is told to stop.
    async fn watch(
        &mut self,
        mut child: tokio::process::Child,
        pid: u32,
        addr: SocketAddr,
    ) -> Ended {
        let healthy_since = Instant::now();
        let mut failures = 0u32;
        let mut last_health = String::new();
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.service.health_interval,
            self.service.health_interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                status = child.wait() => {
                    // Whatever the service left running in its group goes with it.
                    process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                    let (reason, success) = match status {
                        Ok(s) => (process::describe_exit(&s), s.success()),
                        Err(e) => (e.to_string(), false),
                    };
                    self.note(&format!("--- {} {reason} ---", self.id));
                    return Ended::Exited { reason, success, healthy_for: healthy_since.elapsed() };
                }
                _ = tick.tick(), if self.service.health != Health::None => {
                    let probe = self.shared.prober.probe(&self.service.health, addr, &self.id).await;
                    let phase = self.status.borrow().phase;
                    match probe {
                        Ok(summary) => {
                            failures = 0;
                            if phase == Phase::Unhealthy {
                                self.publish(|s| s.phase = Phase::Healthy);
                                self.set_registry(InstanceState::Healthy, Some(summary.clone()), None);
                                last_health = summary;
                            } else if last_health.is_empty() {
                                last_health = summary;
                            }
                        }
                        Err(e) => {
                            failures += 1;
                            let reason = format!("{failures} failed health checks in a row; last: {e}");
                            if failures >= self.service.unhealthy_after {
                                if phase != Phase::Unhealthy {
                                    self.publish(|s| s.phase = Phase::Unhealthy);
                                    self.set_registry(InstanceState::Unhealthy, Some(e.to_string()), Some(reason.clone()));
                                    self.shared.events.send(Event::Unhealthy { instance: self.id.clone(), reason: reason.clone() }).ok();
                                }
                                if self.service.restart != RestartPolicy::No {
                                    self.stop_child(&mut child, pid).await;
                                    return Ended::Unhealthy { reason, healthy_for: healthy_since.elapsed() };
                                }
                            }
                        }
                    }
                }
                cmd = self.rx.recv() => match cmd {
                    None => {
                        self.stop_child(&mut child, pid).await;
                        return Ended::Orphaned;
                    }
                    Some(Command::Stop(ack)) => {
                        self.stop_child(&mut child, pid).await;
                        return Ended::StopRequested(Some(ack));
                    }
                    Some(Command::Restart) => {
                        self.stop_child(&mut child, pid).await;
                        return Ended::RestartRequested;
                    }
                    Some(Command::Start) => {
                        // Already running: settle the waiter with the current, healthy, status.
                        self.publish(|s| s.generation += 1);
                    }
                },
            }
        }
    }

    /// SIGTERM to the group, SIGKILL after `stop_timeout`, and the group killed outright at the end
    /// so nothing a service started outlives it.
    async fn stop_child(&self, child: &mut tokio::process::Child, pid: u32) {
        self.shared
            .events
            .send(Event::Stopping {
                instance: self.id.clone(),
            })
            .ok();
        // Written before SIGTERM, so that discovery stops choosing this instance before it
        // starts to drain.
        self.set_registry(InstanceState::Stopping, None, Some("stopping".into()));
        process::signal_group(pid, nix::sys::signal::Signal::SIGTERM);
        // A stopped (SIGSTOP) process acts on SIGTERM only once it runs again.
        process::signal_group(pid, nix::sys::signal::Signal::SIGCONT);
        if tokio::time::timeout(self.service.stop_timeout, child.wait())
            .await
            .is_err()
        {
            self.note(&format!(
                "did not stop within {}; killing it",
                ms(self.service.stop_timeout)
            ));
            process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait().await;
        }
        process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        self.shared
            .events
            .send(Event::Stopped {
                instance: self.id.clone(),
            })
            .ok();
    }

    /// A line of msctl's own in the instance's log.
    fn note(&self, line: &str) {
        let line = format!("[msctl] {line}");
        if let Ok(mut f) = Project::open_private(&self.shared.project.log(&self.id), true) {
            // One write per line: appenders in other processes never split it.
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
        self.shared
            .events
            .send(Event::Log {
                instance: self.id.clone(),
                line,
            })
            .ok();
    }

    /// Copies the child's stdout and stderr, line by line, to its log file and to the events.
    fn pump_logs(&self, child: &mut tokio::process::Child) {
        let path = self.shared.project.log(&self.id);
        let file = match LogFile::open(&path) {
            Ok(f) => Arc::new(Mutex::new(f)),
            Err(e) => {
                self.shared
                    .events
                    .send(Event::Log {
                        instance: self.id.clone(),
                        line: format!("[msctl] cannot open {}: {e}", path.display()),
                    })
                    .ok();
                return;
            }
        };
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(
                out,
                file.clone(),
                self.id.clone(),
                self.shared.events.clone(),
            ));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, file, self.id.clone(), self.shared.events.clone()));
        }
    }
}

/// Lines longer than this are cut, so one runaway line cannot exhaust memory.
pub const MAX_LINE: usize = 64 * 1024;
/// An instance log is rotated to `<file>.1` past this size…
pub const LOG_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// …and this many old files are kept, `.1` the newest.
pub const LOG_KEEP: u32 = 3;

/// An instance's log file, rotated by size. Shared by the stdout and stderr pumps.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
}

impl LogFile {
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let file = Project::open_private(path, true)?;
        let len = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
        })
    }

    /// Appends one line in one write, so appenders in other processes never split it.
    pub fn write_line(&mut self, line: &[u8]) {
        if self.len + line.len() as u64 + 1 > LOG_MAX_BYTES && self.len > 0 {
            self.rotate();
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        if self.file.write_all(&buf).is_ok() {
            self.len += buf.len() as u64;
        }
    }

    fn rotate(&mut self) {
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        for n in (1..LOG_KEEP).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        let _ = std::fs::rename(&self.path, numbered(1));
        if let Ok(fresh) = Self::open(&self.path) {
            *self = fresh;
        }
    }
}

/// Reads one line of at most `max` bytes into `buf` (without its newline), skipping the rest of
/// a longer line. `Ok(false)` at the end of the stream. Memory stays bounded by `max` plus the
/// reader's buffer, however long the line.
pub async fn read_bounded_line(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<bool> {
    use tokio::io::AsyncBufReadExt;
    buf.clear();
    let mut read_any = false;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(read_any);
        }
        read_any = true;
        let (part, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        let used = done.unwrap_or(chunk.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(true);
        }
    }
}

async fn pump(
    stream: impl AsyncRead + Unpin,
    file: Arc<Mutex<LogFile>>,
    instance: String,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    while let Ok(true) = read_bounded_line(&mut reader, &mut buf, MAX_LINE).await {
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if let Ok(mut f) = file.lock() {
            f.write_line(&buf);
        }
        let _ = events.send(Event::Log {
            instance: instance.clone(),
            line: String::from_utf8_lossy(&buf).into_owned(),
        });
    }
}

/// Polls until the instance answers its health check: a few milliseconds apart at first, so a
/// service that is ready in 5 ms is seen within a few more, then backing off to 50 ms.
async fn wait_ready(
    prober: &Prober,
    health: &Health,
    addr: SocketAddr,
    instance: &str,
) -> Result<String, ProbeError> {
    let mut delay = Duration::from_millis(1);
    loop {
        match prober.probe(health, addr, instance).await {
            Ok(summary) => return Ok(summary),
            Err(e @ ProbeError::Impostor(_)) => return Err(e),
            Err(ProbeError::Failed(_)) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_huge_line_is_cut_without_being_held_whole() {
        // 8 MiB on one line, then a short one.
        let mut input = vec![b'x'; 8 * 1024 * 1024];
        input.extend_from_slice(b"\nnext\n");
        let mut reader = BufReader::with_capacity(4096, &input[..]);
        let mut buf = Vec::new();
        assert!(
            read_bounded_line(&mut reader, &mut buf, 1000)
                .await
                .unwrap()
        );
        assert_eq!(buf.len(), 1000);
        assert!(buf.capacity() < 16 * 1024, "held {} bytes", buf.capacity());
        assert!(
            read_bounded_line(&mut reader, &mut buf, 1000)
                .await
                .unwrap()
        );
        assert_eq!(buf, b"next");
        assert!(
            !read_bounded_line(&mut reader, &mut buf, 1000)
                .await
                .unwrap()
        );
    }

    #[test]
    fn logs_rotate_and_keep_a_few_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s-1.log");
        let mut log = LogFile::open(&path).unwrap();
        let line = vec![b'y'; 1024 * 1024 - 1];
        for _ in 0..(LOG_MAX_BYTES / (1024 * 1024)) * (LOG_KEEP as u64 + 2) {
            log.write_line(&line);
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["s-1.log", "s-1.log.1", "s-1.log.2", "s-1.log.3"]);
        for name in &names {
            let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= LOG_MAX_BYTES, "{name} has {len} bytes");
        }
    }
}
