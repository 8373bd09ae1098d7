//! One supervised instance: a task that owns its process and carries out what the lifecycle
//! machine (lifecycle.rs) decides, and the handle the supervisor keeps on it. `apply` is the one
//! place where the instance changes: the registry, the progress events and the log follow it.

use super::events::Event as Progress;
use super::health::{ProbeError, Prober, ms};
use super::launch::Launch;
use super::lifecycle::{self, Action, Event, Machine, Policy, Report, State};
use super::logs::{LogFile, pump};
use super::process;
use super::store::RegistryStore;
use crate::config::{Health, Port, Service};
use crate::project::Project;
use msctl_contract::registry::{Instance, InstanceState, SupervisorPhase};
use std::collections::VecDeque;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// What the handle sees of an instance.
#[derive(Debug, Clone)]
pub struct Status {
    pub machine: Machine,
    /// Counts settled starts, so a waiter can tell the outcome of its start from an earlier one.
    pub generation: u64,
    pub startup: Option<Duration>,
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
    /// The number in its id: `users-2` is 2.
    pub index: u32,
    /// The service as this instance runs it.
    pub spec: Arc<Service>,
    tx: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Status>,
}

/// What every instance's task shares.
#[derive(Debug, Clone)]
pub struct Shared {
    pub project: Project,
    pub store: Arc<RegistryStore>,
    pub events: super::events::Sender,
    pub prober: Prober,
    /// The supervisor's OTLP receiver: its base URL and bearer token.
    pub otlp: Option<(String, String)>,
}

/// How long an instance's OpenTelemetry SDK waits before it exports a batch, in milliseconds:
/// short, so that `msctl call` then `msctl trace last` shows the whole trace.
pub const EXPORT_DELAY_MS: u64 = 100;

impl InstanceHandle {
    /// Creates the instance's task, idle until started.
    pub fn create(service: Arc<Service>, index: u32, shared: Shared) -> Self {
        let id = format!("{}-{index}", service.name);
        let (tx, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(Status {
            machine: Machine::default(),
            generation: 0,
            startup: None,
        });
        let runner = Runner {
            id: id.clone(),
            policy: policy_of(&service),
            service: service.clone(),
            shared,
            rx,
            status: status_tx,
            machine: Machine::default(),
            child: None,
            acks: Vec::new(),
            started_at_ms: 0,
            last_addr: None,
            written: None,
            next_probe: Instant::now(),
            probe_gap: READINESS_FIRST,
        };
        tokio::spawn(runner.run());
        Self {
            id,
            service: service.name.clone(),
            index,
            spec: service,
            tx,
            status,
        }
    }

    pub fn state(&self) -> State {
        self.status.borrow().machine.state.clone()
    }

    /// Starts the instance and waits until it is healthy, or failed to become so.
    pub async fn start(&self) -> Result<Duration, String> {
        let before = self.status.borrow().generation;
        let _ = self.tx.send(Command::Start);
        self.settled_after(before).await
    }

    /// Replaces the process and waits until the new one is healthy, or failed to become so.
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

    async fn settled_after(&self, generation: u64) -> Result<Duration, String> {
        let mut rx = self.status.clone();
        let status = rx
            .wait_for(|s| s.generation > generation)
            .await
            .map(|s| s.clone())
            .map_err(|_| "the supervisor is shutting down".to_string())?;
        match status.machine.state {
            State::Healthy { .. } | State::Unhealthy { .. } | State::Completed { .. } => {
                Ok(status.startup.unwrap_or_default())
            }
            State::Failed { reason } | State::Stopped { reason } => Err(reason),
            other => Err(format!("it is {}", describe(&other))),
        }
    }
}

/// Where `program` is: relative to `root` when it has a `/`, else on PATH, then in the sbin
/// folders. `None` when it is nowhere.
pub fn find_program(program: &str, root: &std::path::Path) -> Option<PathBuf> {
    let path = PathBuf::from(program);
    if program.contains('/') {
        let path = if path.is_relative() {
            root.join(path)
        } else {
            path
        };
        return path.is_file().then_some(path);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(
            ["/usr/local/sbin", "/usr/sbin", "/sbin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// Why `program` could not be started, and what to do about it.
pub fn cannot_run(program: &std::path::Path, e: &std::io::Error, root: &std::path::Path) -> String {
    let shown = program.display();
    let bare = !program.to_string_lossy().contains('/');
    // Relative to the project folder, where the service runs, whichever folder msctl ran in.
    let resolved = root.join(program);
    let fix = match e.kind() {
        _ if resolved.is_dir() => {
            "it is a folder, not a program; give the program inside it".into()
        }
        std::io::ErrorKind::NotFound if bare && resolved.is_file() => format!(
            "a bare name is looked for on PATH; for the one in the project folder write `./{shown}`"
        ),
        std::io::ErrorKind::NotFound if bare => {
            "it is not on PATH (nor in /usr/local/sbin, /usr/sbin, /sbin); install it, or give its path in msctl.toml".into()
        }
        // The file is there: what is missing is the interpreter its `#!` line names.
        std::io::ErrorKind::NotFound if resolved.is_file() => match interpreter(&resolved) {
            Some(line) if line.ends_with('\r') => format!(
                "its first line, `{}`, ends in a Windows line ending (CR), so it names an interpreter that does not exist; convert the file to Unix line endings (`sed -i 's/\\r$//' {shown}`, or dos2unix)",
                line.trim_end()
            ),
            Some(line) => format!(
                "the interpreter its first line names, `{}`, is not installed; install it, or correct that line",
                line.trim_start_matches("#!").trim()
            ),
            None => format!("{e}"),
        },
        std::io::ErrorKind::NotFound => {
            "no such file; build it first (`msctl build`), or correct the path in msctl.toml".into()
        }
        std::io::ErrorKind::PermissionDenied if resolved.is_file() && !is_executable(&resolved) => {
            format!(
                "it is not executable: `chmod +x {shown}`, or run it through its interpreter, as in `command = [\"sh\", \"{shown}\"]`"
            )
        }
        _ => return format!("cannot run {shown}: {e}"),
    };
    format!("cannot run {shown}: {fix}")
}

/// The `#!` line a script starts with, as written (a CR at its end kept).
fn interpreter(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let head = &head[..n];
    if !head.starts_with(b"#!") {
        return None;
    }
    let end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    Some(String::from_utf8_lossy(&head[..end]).into_owned())
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn policy_of(service: &Service) -> Policy {
    Policy {
        restart: service.restart,
        max_restarts: service.max_restarts,
        unhealthy_after: service.unhealthy_after,
        start_timeout: service.start_timeout,
        stop_timeout: service.stop_timeout,
        auto_port: service.port == Port::Auto,
        job: service.job,
    }
}

/// The first readiness probe follows a spawn this soon; the gap doubles up to the cap, so a
/// service ready in 5 ms is seen within a few more.
const READINESS_FIRST: Duration = Duration::from_millis(1);
const READINESS_CAP: Duration = Duration::from_millis(50);

struct Runner {
    id: String,
    service: Arc<Service>,
    policy: Policy,
    shared: Shared,
    rx: mpsc::UnboundedReceiver<Command>,
    status: watch::Sender<Status>,
    machine: Machine,
    child: Option<tokio::process::Child>,
    /// Those waiting for a stop to finish.
    acks: Vec<oneshot::Sender<()>>,
    started_at_ms: u64,
    /// Shown in `ps` after the process is gone.
    last_addr: Option<SocketAddr>,
    /// What the registry holds for this instance, to write only changes.
    written: Option<Instance>,
    next_probe: Instant,
    probe_gap: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Runner {
    async fn run(mut self) {
        loop {
            let deadline = self.machine.state.deadline();
            // A job's readiness is its exit: it is never probed.
            let probing = self.machine.state.probing()
                && !self.policy.job
                && (matches!(self.machine.state, State::Starting { .. })
                    || self.service.health != Health::None);
            let event = tokio::select! {
                biased;
                cmd = self.rx.recv() => match cmd {
                    // The supervisor dropped the handle: stop the process and end.
                    None => return self.orphaned().await,
                    Some(Command::Start) => Event::Start,
                    Some(Command::Restart) => Event::Restart,
                    Some(Command::Stop(ack)) => {
                        self.acks.push(ack);
                        Event::Stop
                    }
                },
                status = wait(&mut self.child) => self.exited(status),
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Event::Deadline,
                result = probe_at(
                    &self.shared.prober,
                    &self.service.health,
                    self.machine.state.addr(),
                    &self.id,
                    self.next_probe,
                ), if probing => self.probed(result),
            };
            self.apply(event);
        }
    }

    /// Feeds `event` to the machine and carries out its actions, with the events they lead to,
    /// then records the outcome once: registry, status, waiters.
    fn apply(&mut self, event: Event) {
        let mut queue = VecDeque::from([event]);
        let mut settle = false;
        while let Some(event) = queue.pop_front() {
            let (next, actions) =
                lifecycle::step(&self.machine, event, &self.policy, Instant::now());
            self.machine = next;
            for action in actions {
                match action {
                    Action::Spawn => queue.push_back(self.spawn()),
                    Action::Terminate { pid } => {
                        // The registry says `stopping` before the process hears of it, so that
                        // discovery stops choosing it before it drains.
                        self.record(false);
                        process::signal_group(pid, nix::sys::signal::Signal::SIGTERM);
                        // A stopped (SIGSTOP) process acts on SIGTERM only once it runs again.
                        process::signal_group(pid, nix::sys::signal::Signal::SIGCONT);
                    }
                    Action::Kill { pid } => {
                        process::signal_group(pid, nix::sys::signal::Signal::SIGKILL)
                    }
                    Action::Settle => settle = true,
                    // Answered here, at the point in the queue where the process is gone: a
                    // start that overrode the stop may spawn a new one before the queue ends.
                    Action::AckStops => {
                        for a in self.acks.drain(..) {
                            let _ = a.send(());
                        }
                    }
                    Action::Report(report) => self.report(report),
                }
            }
        }
        if let State::Healthy { .. } | State::Unhealthy { .. } = self.machine.state {
            if self.probe_gap != self.service.health_interval {
                self.probe_gap = self.service.health_interval;
                self.next_probe = Instant::now() + self.probe_gap;
            }
        }
        self.record(settle);
    }

    /// Writes the registry when this instance's entry changed, and publishes the status.
    fn record(&mut self, settle: bool) {
        if let Some(instance) = self.instance() {
            if self.written.as_ref() != Some(&instance) {
                self.shared
                    .store
                    .upsert(&self.service.name, instance.clone());
                self.written = Some(instance);
            }
        }
        let machine = self.machine.clone();
        self.status.send_modify(|s| {
            s.machine = machine;
            if settle {
                s.generation += 1;
            }
        });
    }

    /// The registry's view of this instance; `None` before its first start.
    fn instance(&self) -> Option<Instance> {
        use InstanceState as R;
        let (state, last_health, reason) = match &self.machine.state {
            State::Idle | State::Launching { .. } => return None,
            State::Starting { .. } => (R::Starting, None, None),
            State::Healthy { summary, .. } => (R::Healthy, Some(summary.clone()), None),
            State::Unhealthy { reason, .. } => {
                (R::Unhealthy, Some(reason.clone()), Some(reason.clone()))
            }
            State::Stopping { .. } => (R::Stopping, None, Some("stopping".to_string())),
            State::BackingOff { until, reason } => (
                R::Restarting,
                None,
                Some(format!(
                    "restarting in {}: {reason}",
                    ms(until.saturating_duration_since(Instant::now()))
                )),
            ),
            State::Stopped { reason } => (R::Stopped, None, Some(reason.clone())),
            State::Completed { reason } => (R::Completed, None, Some(reason.clone())),
            State::Failed { reason } => (R::Failed, None, Some(reason.clone())),
        };
        Some(Instance {
            id: self.id.clone(),
            pid: self.machine.state.pid(),
            address: self
                .machine
                .state
                .addr()
                .or(self.last_addr)
                .map(|a| a.to_string())
                .unwrap_or_default(),
            state,
            started_at_ms: self.started_at_ms,
            restarts: self.machine.restarts,
            last_health,
            reason,
        })
    }

    fn report(&mut self, report: Report) {
        let instance = self.id.clone();
        let event = match report {
            Report::Starting => Progress::Starting { instance },
            Report::Healthy { startup } => {
                self.status.send_modify(|s| s.startup = Some(startup));
                Progress::Healthy {
                    instance,
                    address: self.last_addr.map(|a| a.to_string()).unwrap_or_default(),
                    startup_ms: startup.as_secs_f64() * 1000.0,
                }
            }
            Report::Completed { took } => {
                self.status.send_modify(|s| s.startup = Some(took));
                Progress::Completed {
                    instance,
                    took_ms: took.as_secs_f64() * 1000.0,
                }
            }
            Report::Failed { reason } => Progress::Failed {
                log: self.shared.project.log(&instance),
                instance,
                reason,
            },
            Report::Exited { reason } => {
                self.note(&format!("--- {instance} {reason} ---"));
                Progress::Exited { instance, reason }
            }
            Report::Unhealthy { reason } => Progress::Unhealthy { instance, reason },
            Report::Restarting { after, restarts } => Progress::Restarting {
                instance,
                after_ms: after.as_millis() as u64,
                restarts,
            },
            Report::GaveUp { reason } => Progress::GaveUp { instance, reason },
            Report::Stopping => Progress::Stopping { instance },
            Report::Stopped => Progress::Stopped { instance },
            Report::Note(line) => return self.note(&line),
        };
        self.shared.events.send(event).ok();
    }

    /// What the process's end means: an exit, or a port lost to another process at start.
    fn exited(&mut self, status: std::io::Result<std::process::ExitStatus>) -> Event {
        self.child = None;
        self.stop_leftovers();
        if let (State::Starting { addr, .. }, true) = (&self.machine.state, self.policy.auto_port) {
            if !crate::ports::is_free(addr.port()) {
                return Event::PortLost;
            }
        }
        match status {
            Ok(s) => Event::Exited {
                reason: process::describe_exit(&s),
                success: s.success(),
            },
            Err(e) => Event::Exited {
                reason: e.to_string(),
                success: false,
            },
        }
    }

    /// What a health check's result means: readiness while starting, liveness after.
    fn probed(&mut self, result: Result<String, ProbeError>) -> Event {
        let starting = matches!(self.machine.state, State::Starting { .. });
        if starting {
            self.probe_gap = (self.probe_gap * 2).min(READINESS_CAP);
        }
        self.next_probe = Instant::now() + self.probe_gap;
        match (starting, result) {
            (true, Ok(summary)) => Event::Ready { summary },
            (true, Err(ProbeError::Impostor(reason))) => Event::Impostor { reason },
            // Not answering yet is what starting looks like; the start timeout judges it.
            (true, Err(ProbeError::Failed(reason))) => Event::NotReady { reason },
            (false, Ok(_)) => Event::ProbeOk,
            (false, Err(e)) => Event::ProbeFailed {
                reason: e.to_string(),
            },
        }
    }

    /// Picks the port and starts the process: `Spawned`, or why it could not be.
    fn spawn(&mut self) -> Event {
        match self.try_spawn() {
            Ok((pid, addr)) => Event::Spawned { pid, addr },
            Err(reason) => Event::SpawnFailed { reason },
        }
    }

    fn try_spawn(&mut self) -> Result<(u32, SocketAddr), String> {
        let data_dir = self.shared.project.data_dir(&self.service.name);
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let port = match self.service.port {
            Port::Fixed(p) if !crate::ports::is_free(p) => {
                let holder = crate::ports::holder(p)
                    .map(|h| format!(" by {h}"))
                    .unwrap_or_default();
                return Err(format!(
                    "port {p} is already taken{holder}; free it, or use `port = \"auto\"`"
                ));
            }
            Port::Fixed(p) => p,
            Port::Auto => crate::ports::pick().ok_or("no free loopback port")?,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let launch = self.launch(addr);
        let (program, args) = launch.program()?;
        let mut child = process::spawn(
            &program,
            &args,
            &launch.env(|line| self.note(&line))?,
            &launch.unset(),
            &self.shared.project.root,
        )
        .map_err(|e| cannot_run(&program, &e, &self.shared.project.root))?;
        let pid = child.id().unwrap_or(0);
        self.pump_logs(&mut child);
        self.child = Some(child);
        self.started_at_ms = now_ms();
        self.last_addr = Some(addr);
        self.probe_gap = READINESS_FIRST;
        self.next_probe = Instant::now() + READINESS_FIRST;
        Ok((pid, addr))
    }

    /// What the process left running when it ended is killed, as docker kills what is left in a
    /// container whose main process ended: the rest of its group, and (on Linux) what left the
    /// group (a `setsid`, a daemon's double fork) but still has the instance's `MSCTL_REGISTRY`
    /// and `MSCTL_INSTANCE` in its environment. Instances with one id never overlap: a new one
    /// starts after this. A stopping supervisor looks for every instance's at once, at the end.
    fn stop_leftovers(&mut self) {
        let Some(pid) = self.machine.state.pid() else {
            return;
        };
        #[cfg(unix)]
        process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        if self.shared.store.phase() != SupervisorPhase::Stopping {
            let killed = process::kill_left_behind(&self.shared.project.registry(), Some(&self.id));
            if killed > 0 {
                self.note(&format!(
                    "killed {killed} process(es) it left running outside its process group"
                ));
            }
        }
    }

    /// The handle is gone (the supervisor is exiting): stop the process within its stop timeout.
    async fn orphaned(mut self) {
        let Some(pid) = self.machine.state.pid() else {
            return;
        };
        process::signal_group(pid, nix::sys::signal::Signal::SIGTERM);
        process::signal_group(pid, nix::sys::signal::Signal::SIGCONT);
        if let Some(child) = &mut self.child {
            let _ = tokio::time::timeout(self.policy.stop_timeout, child.wait()).await;
        }
        self.stop_leftovers();
    }

    /// What this instance is started with, on `addr`.
    fn launch(&self, addr: SocketAddr) -> Launch<'_> {
        Launch {
            service: &self.service,
            id: &self.id,
            addr,
            project: &self.shared.project,
            otlp: self.shared.otlp.as_ref(),
        }
    }

    /// A line of msctl's own in the instance's log.
    fn note(&self, line: &str) {
        let line = format!("[msctl] {line}");
        if let Ok(mut f) =
            msctl_contract::fs::open_private(&self.shared.project.log(&self.id), true)
        {
            // One write per line: appenders in other processes never split it.
            let stamp = super::logs::stamp(SystemTime::now());
            let _ = f.write_all(format!("{stamp} {line}\n").as_bytes());
        }
        self.shared
            .events
            .send(Progress::Log {
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
                self.note(&format!("cannot open {}: {e}", path.display()));
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

/// Runs one health check at `due`.
async fn probe_at(
    prober: &Prober,
    health: &Health,
    addr: Option<SocketAddr>,
    instance: &str,
    due: Instant,
) -> Result<String, ProbeError> {
    tokio::time::sleep_until(due).await;
    match addr {
        Some(addr) => prober.probe(health, addr, instance).await,
        None => Err(ProbeError::Failed("no address".into())),
    }
}

/// Waits for the child to exit; never resolves when there is none.
async fn wait(
    child: &mut Option<tokio::process::Child>,
) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// A state in a few words, for a waiter that got neither success nor failure.
fn describe(state: &State) -> &'static str {
    match state {
        State::Idle => "idle",
        State::Launching { .. } | State::Starting { .. } => "starting",
        State::Healthy { .. } => "healthy",
        State::Unhealthy { .. } => "unhealthy",
        State::Stopping { .. } => "stopping",
        State::BackingOff { .. } => "restarting",
        State::Stopped { .. } => "stopped",
        State::Completed { .. } => "completed",
        State::Failed { .. } => "failed",
    }
}
