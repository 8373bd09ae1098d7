//! The supervisor: starts the system in dependency order, keeps it running, answers the control
//! API, and stops everything in reverse order when asked or when its shutdown future completes.

pub mod control;
pub mod events;
pub mod health;
pub mod instance;
pub mod launch;
pub mod lifecycle;
pub mod logs;
pub mod process;
pub mod signals;
pub mod store;

use crate::config::Config;
use crate::error::MsctlError;
use crate::project::Project;
use crate::telemetry::receiver::Intake;
use events::Event;
use instance::{InstanceHandle, Shared};
use lifecycle::State;
use msctl_contract::control::{BadCount, FailureKind, MAX_REPLICAS, Request, Response};
use msctl_contract::registry::SupervisorPhase;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use store::RegistryStore;
use tokio::sync::{Notify, watch};

/// Why a start did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    pub instance: String,
    pub reason: String,
    /// Failed only because something it depends on failed.
    pub dependency: bool,
}

#[derive(Debug, Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// As loaded at start, or reloaded by a later `start`; running instances keep their own copy.
    config: Mutex<Config>,
    shared: Shared,
    handles: Mutex<BTreeMap<String, Vec<InstanceHandle>>>,
    down: Notify,
    stopped: watch::Sender<bool>,
    intake: Intake,
    /// Watch mode, while it is on.
    watching: Mutex<Option<crate::watch::Watching>>,
    /// One change at a time to a service's instances (scale, restart or replace, stop), in the
    /// order asked: two at once read the same list and acted on it twice, starting two `posts-3`
    /// or splitting the list past its end.
    changing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Set once msctl begins to stop everything (`down`, a signal, a panic): requests still in
    /// progress are answered then, instead of having their connection cut.
    stopping: watch::Sender<bool>,
}

/// Holds the project's lock file for as long as the supervisor lives.
#[cfg(unix)]
type Lock = nix::fcntl::Flock<std::fs::File>;

/// Takes the project's lock, or names the msctl that holds it. The holder writes its pid into
/// the lock file right after locking, so a loser that reads too early retries for a moment.
#[cfg(unix)]
fn lock(project: &Project) -> Result<Lock, MsctlError> {
    use std::io::Write;
    let path = project.lock();
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&path)
        .map_err(|e| MsctlError::Io(format!("cannot open {}: {e}", path.display())))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let _ = lock.set_len(0);
            let _ = lock.write_all(std::process::id().to_string().as_bytes());
            Ok(lock)
        }
        Err(_) => {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            loop {
                let pid = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok())
                    .filter(|pid| process::alive(*pid));
                if let Some(pid) = pid {
                    return Err(MsctlError::AlreadyStarting { pid });
                }
                if std::time::Instant::now() > deadline {
                    return Err(MsctlError::Io(format!(
                        "another msctl holds {} but does not say who it is; if none runs, delete the file",
                        path.display()
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

/// A panic anywhere in the supervisor: its message, and a wake-up for `run`, which then stops
/// everything and reports the panic instead of carrying on half-broken.
#[derive(Debug, Default)]
struct Fatal {
    message: Mutex<Option<String>>,
    notify: Notify,
}

impl Fatal {
    fn install() -> Arc<Self> {
        let fatal = Arc::new(Self::default());
        let hooked = fatal.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            hooked
                .message
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| info.to_string());
            hooked.notify.notify_one();
            previous(info);
        }));
        fatal
    }

    async fn wait(&self) -> String {
        self.notify.notified().await;
        self.message
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "a panic".into())
    }
}

/// How the supervisor runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Started by `up -d`, in a session of its own.
    pub detached: bool,
    /// Rebuild and replace services when their files change, from the start.
    pub watch: bool,
}

/// Why the supervisor stops.
enum Stop {
    Signal(&'static str),
    Down,
    Panic(String),
}

/// Runs the system described by `config` until a signal (from `signals`, installed by the caller
/// before anything else it did) or `msctl down` stops it. Start-up failures stop what was started
/// and come back as an error; so does a panic.
pub async fn run(
    project: Project,
    config: Config,
    services: Vec<String>,
    options: Options,
    events: events::Sender,
    mut signals: signals::Signals,
) -> Result<(), MsctlError> {
    let detached = options.detached;
    project
        .create_state_dirs()
        .map_err(|e| MsctlError::Io(format!("cannot create {}: {e}", project.state.display())))?;
    let _lock = lock(&project)?;
    let fatal = Fatal::install();
    #[cfg(debug_assertions)]
    let fault = std::env::var("MSCTL_FAULT").unwrap_or_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| MsctlError::Io(format!("cannot open the control port: {e}")))?;
    let control_addr = listener
        .local_addr()
        .map_err(|e| MsctlError::Io(e.to_string()))?;
    // 128 random bits, as a trace id has: enough that no one guesses them. The control token
    // stays in the private registry; the OTLP one is given to every instance.
    let token = msctl_contract::trace_context::hex(&rand::random::<[u8; 16]>());
    let otlp_token = msctl_contract::trace_context::hex(&rand::random::<[u8; 16]>());
    let dashboard_token = msctl_contract::trace_context::hex(&rand::random::<[u8; 16]>());
    let store = RegistryStore::create(
        project.registry(),
        msctl_contract::registry::Supervisor {
            pid: std::process::id(),
            control: control_addr.to_string(),
            project: project.root.display().to_string(),
            started_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
            detached,
            token: token.clone(),
            phase: SupervisorPhase::Starting,
            otlp_token: otlp_token.clone(),
            watching: false,
            dashboard_token: dashboard_token.clone(),
        },
    )
    .map_err(|e| {
        MsctlError::Io(format!(
            "cannot write {}: {e}",
            project.registry().display()
        ))
    })?;
    let store = Arc::new(store);
    #[cfg(unix)]
    let keeper = tokio::spawn(keep_state_files(project.clone(), store.clone()));
    // What msctl itself was told to export to, it forwards to, after storing.
    let upstream = std::env::var(msctl_contract::env::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| {
            std::env::var(msctl_contract::env::OTEL_EXPORTER_OTLP_ENDPOINT)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|base| msctl_contract::otlp::traces_url(&base))
        });
    let intake = Intake::start(project.telemetry_db(), otlp_token.clone(), upstream);
    let shared = Shared {
        project: project.clone(),
        store: store.clone(),
        events: events.clone(),
        prober: Default::default(),
        otlp: Some((format!("http://{control_addr}"), otlp_token)),
    };
    let (stopped, _) = watch::channel(false);
    let sup = Supervisor {
        inner: Arc::new(Inner {
            config: Mutex::new(config),
            shared,
            handles: Mutex::new(BTreeMap::new()),
            down: Notify::new(),
            stopped,
            intake: intake.clone(),
            watching: Mutex::new(None),
            changing: Mutex::new(HashMap::new()),
            stopping: watch::channel(false).0,
        }),
    };
    let server = tokio::spawn(control::serve(
        listener,
        token,
        sup.clone(),
        intake.clone().routes().merge(crate::dashboard::routes(
            sup.clone(),
            dashboard_token,
            control_addr,
        )),
    ));

    let mut stop = Box::pin(async {
        tokio::select! {
            biased;
            message = fatal.wait() => Stop::Panic(message),
            name = signals.next() => Stop::Signal(name),
            _ = sup.inner.down.notified() => Stop::Down,
        }
    });
    let start = async {
        #[cfg(debug_assertions)]
        if fault == "panic-on-start" {
            // A stand-in for any bug: tests check that a panic is reported, never taken for success.
            tokio::spawn(async { panic!("injected by MSCTL_FAULT=panic-on-start") });
        }
        sup.start(&services).await
    };
    let started = tokio::select! {
        biased;
        why = &mut stop => Err(why),
        result = start => Ok(result),
    };
    let before_ready = started.is_err();
    let why = match started {
        Ok(Err(failure)) => {
            sup.stop_all(&store).await;
            let log = project.log(&failure.instance);
            let err = MsctlError::Start {
                instance: failure.instance,
                reason: failure.reason,
                log: Some(log),
            };
            intake.flush(FLUSH_LIMIT).await;
            finish(&store, &sup, server).await;
            return Err(err);
        }
        Ok(Ok(())) => {
            if options.watch
                && let Err(e) = sup.set_watching(true).await
            {
                say!("msctl: cannot watch for changes: {e}");
            }
            store.set_phase(SupervisorPhase::Ready);
            events
                .send(Event::Ready {
                    supervisor_pid: std::process::id(),
                })
                .ok();
            (&mut stop).await
        }
        Err(why) => why,
    };
    drop(stop);
    sup.inner.stopping.send_replace(true);
    let _ = sup.set_watching(false).await;
    if let Stop::Signal(name) = why {
        say!("msctl: {name}; stopping every service (again to force)");
    }
    // A second signal while stopping gives up on grace; the registry still says what happened.
    let force_store = store.clone();
    let registry_path = sup.project().registry();
    let force = tokio::spawn(async move {
        let name = signals.next().await;
        say!("msctl: {name} again; killing every service now");
        for pid in force_store.mark_all_killed() {
            #[cfg(unix)]
            process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        }
        process::kill_left_behind(&registry_path, None);
        force_store.remove();
        std::process::exit(130);
    });
    sup.stop_all(&store).await;
    // What the instances left running outside their groups, found in one look for all of them.
    let killed = process::kill_left_behind(&sup.project().registry(), None);
    if killed > 0 {
        say!(
            "msctl: killed {killed} process(es) the services left running outside their process groups"
        );
    }
    force.abort();
    #[cfg(unix)]
    keeper.abort();
    // The services sent their last spans as they stopped; they are stored before msctl goes.
    intake.flush(FLUSH_LIMIT).await;
    finish(&store, &sup, server).await;
    // Stopped before start-up was done: `up` did not do what it was asked, and says why.
    let interrupted = |cause: String| MsctlError::Interrupted {
        cause,
        during: "before the system was ready".into(),
        undone: "everything it had started is stopped".into(),
    };
    match why {
        Stop::Panic(message) => Err(MsctlError::Internal(message)),
        Stop::Signal(name) if before_ready => Err(interrupted(format!("msctl got {name}"))),
        Stop::Down if before_ready => Err(interrupted("`msctl down` came".into())),
        Stop::Signal(_) | Stop::Down => Ok(()),
    }
}

/// A request as the user would name it, for messages.
fn request_name(request: &Request) -> String {
    match request {
        Request::Ping => "ping".into(),
        Request::Down => "down".into(),
        Request::Start { services } if services.is_empty() => "start".into(),
        Request::Start { services } => format!("start of {}", services.join(", ")),
        Request::Stop { service } => format!("stop of {service}"),
        Request::Restart { service } => format!("restart of {service}"),
        Request::Scale { service, .. } => format!("scaling of {service}"),
        Request::Watch { on: true } => "start of watch mode".into(),
        Request::Watch { on: false } => "end of watch mode".into(),
    }
}

/// How long a stopping supervisor waits for its store to take in the last spans.
const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);
/// How long an instance taken out of rotation goes on answering before it is sent SIGTERM: long
/// enough for calls that picked it just before to arrive.
const DEREGISTER_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// How often a running supervisor checks that its registry is still there, as it wrote it.
const KEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Writes the registry and the lock file again when they are deleted or spoiled while msctl runs
/// (by hand, by `git clean -fdx`, by `rm -rf .msctl`). Without the registry no command finds the
/// system: `msctl down` said "nothing is running" (or that the file was not JSON) and left every
/// process running; without the lock file, a second `msctl up` would start a second supervisor.
#[cfg(unix)]
async fn keep_state_files(project: Project, store: Arc<RegistryStore>) {
    let mut tick = tokio::time::interval(KEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // A lock taken again, held as long as this task lives, which is as long as msctl runs.
    let mut _relocked: Option<Lock> = None;
    loop {
        tick.tick().await;
        if store.is_removed() {
            return;
        }
        // A log deleted (or the whole folder) is written on, unlinked, where `msctl logs` never
        // looks: each is opened again at its path.
        let logs_gone = !project.logs_dir().exists()
            || store
                .snapshot()
                .services
                .values()
                .flat_map(|s| &s.instances)
                .filter(|i| i.pid.is_some())
                .any(|i| !project.log(&i.id).exists());
        if store.is_current() && !logs_gone && project.lock().exists() {
            continue;
        }
        if let Err(e) = project.create_state_dirs() {
            say!("msctl: cannot create {}: {e}", project.state.display());
            continue;
        }
        if logs_gone {
            logs::REOPEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if !project.lock().exists() {
            let p = project.clone();
            match tokio::task::spawn_blocking(move || lock(&p)).await {
                Ok(Ok(lock)) => _relocked = Some(lock),
                Ok(Err(e)) => say!("msctl: {e}"),
                Err(_) => {}
            }
        }
        if store.restore_if_changed() {
            say!(
                "msctl: {} was deleted or changed while the system ran; written again",
                project.registry().display()
            );
        }
    }
}

/// Removes the registry and lets the control API answer the `down` that may have asked.
async fn finish(store: &RegistryStore, sup: &Supervisor, server: tokio::task::JoinHandle<()>) {
    store.remove();
    sup.inner.stopped.send_replace(true);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    server.abort();
}

impl Supervisor {
    pub fn config(&self) -> Config {
        self.inner
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads msctl.toml again, so that a service added since start (`msctl scaffold`) can be
    /// started. Instances already created keep the settings they were started with.
    pub fn reload(&self) -> Result<(), String> {
        let manifest = &self.inner.shared.project.manifest;
        let fresh = crate::config::load(manifest).map_err(|e| e.to_string())?;
        *self.inner.config.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Carries out one control request. One cut short because msctl began to stop everything is
    /// answered `busy`, saying so, rather than left to a closed connection.
    pub async fn handle(&self, request: Request) -> Response {
        if matches!(request, Request::Ping | Request::Down) {
            return self.carry_out(request).await;
        }
        let what = request_name(&request);
        let mut stopping = self.inner.stopping.subscribe();
        tokio::select! {
            answer = self.carry_out(request) => answer,
            _ = stopping.wait_for(|s| *s) => control::failed(
                FailureKind::Busy,
                format!("msctl began to stop everything (`msctl down` or a signal) before the {what} was done"),
            ),
        }
    }

    async fn carry_out(&self, request: Request) -> Response {
        let changes = !matches!(request, Request::Ping | Request::Down);
        let response = self.carry_out_unchecked(request).await;
        // A change the registry does not hold is not one callers see: say so rather than done.
        match (response, self.inner.shared.store.write_error()) {
            (Response::Done, Some(e)) if changes => control::failed(
                FailureKind::Unrecorded,
                format!("done, but the supervisor {e}"),
            ),
            (response, _) => response,
        }
    }

    async fn carry_out_unchecked(&self, request: Request) -> Response {
        let phase = self.inner.shared.store.snapshot().supervisor.phase;
        let busy = |what: &str| {
            control::failed(
                FailureKind::Busy,
                format!("the system is {what}; try again when `msctl ps` shows it ready"),
            )
        };
        match request {
            Request::Ping => Response::Pong {
                pid: std::process::id(),
                registry_error: self.inner.shared.store.write_error(),
            },
            Request::Down => {
                self.request_down().await;
                Response::Done
            }
            _ if phase == SupervisorPhase::Starting => busy("still starting"),
            _ if phase == SupervisorPhase::Stopping => busy("stopping"),
            Request::Start { services } => {
                if let Err(e) = self.reload() {
                    return control::failed(FailureKind::Config, e);
                }
                let config = self.config();
                if let Some(unknown) = services.iter().find(|s| !config.services.contains_key(*s)) {
                    return control::failed(FailureKind::UnknownService, unknown.clone());
                }
                match self.start(&services).await {
                    Ok(()) => Response::Done,
                    Err(f) => Response::Failed(msctl_contract::control::Failure {
                        kind: FailureKind::Start,
                        message: f.reason,
                        instance: Some(f.instance),
                    }),
                }
            }
            Request::Watch { on } => match self.set_watching(on).await {
                Ok(()) => Response::Done,
                Err(e) => control::failed(FailureKind::Usage, e),
            },
            Request::Stop { service }
            | Request::Restart { service }
            | Request::Scale { service, .. }
                if !self.config().services.contains_key(&service) =>
            {
                control::failed(FailureKind::UnknownService, service)
            }
            Request::Stop { service } => {
                self.stop_service(&service).await;
                Response::Done
            }
            Request::Scale { service, replicas } => {
                match self.scale_service(&service, replicas).await {
                    Ok(()) => Response::Done,
                    Err((kind, f)) => Response::Failed(msctl_contract::control::Failure {
                        kind,
                        message: f.reason,
                        instance: Some(f.instance),
                    }),
                }
            }
            Request::Restart { service } => match self.restart_service(&service).await {
                Ok(()) => Response::Done,
                Err(f) => Response::Failed(msctl_contract::control::Failure {
                    kind: FailureKind::Start,
                    message: f.reason,
                    instance: Some(f.instance),
                }),
            },
        }
    }

    /// Asks the supervisor to stop everything and exit; resolves once everything is stopped.
    pub async fn request_down(&self) {
        let mut stopped = self.inner.stopped.subscribe();
        self.inner.down.notify_one();
        let _ = stopped.wait_for(|s| *s).await;
    }

    fn handles_of(&self, service: &str) -> Vec<InstanceHandle> {
        self.inner
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
            .unwrap_or_default()
    }

    /// Starts `names` (all when empty) and what they depend on, each once its dependencies are
    /// healthy, independent ones in parallel. Instances already healthy are left as they are.
    pub async fn start(&self, names: &[String]) -> Result<(), StartFailure> {
        let config = self.config();
        let order = config.start_order(names).map_err(|reason| StartFailure {
            instance: names.join(", "),
            reason,
            dependency: false,
        })?;
        {
            let mut handles = self.inner.handles.lock().unwrap_or_else(|e| e.into_inner());
            for service in &order {
                handles.entry(service.name.clone()).or_insert_with(|| {
                    let spec = Arc::new((*service).clone());
                    (1..=service.replicas)
                        .map(|i| InstanceHandle::create(spec.clone(), i, self.inner.shared.clone()))
                        .collect()
                });
            }
        }
        let mut done: HashMap<String, watch::Receiver<Option<bool>>> = HashMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        for service in order {
            if let Some(reason) = self.absent(service) {
                // What depends on it starts anyway: it must cope without it.
                done.insert(service.name.clone(), watch::channel(Some(true)).1);
                self.inner
                    .shared
                    .events
                    .send(Event::Absent {
                        service: service.name.clone(),
                        reason,
                    })
                    .ok();
                continue;
            }
            let (tx, rx) = watch::channel(None);
            let deps: Vec<(String, watch::Receiver<Option<bool>>)> = service
                .depends_on
                .iter()
                .map(|d| (d.clone(), done[d].clone()))
                .collect();
            done.insert(service.name.clone(), rx);
            let own = self.handles_of(&service.name);
            tasks.spawn(async move {
                let result = start_service(own, deps).await;
                tx.send_replace(Some(result.is_ok()));
                result
            });
        }
        let mut first: Option<StartFailure> = None;
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Err(failure)) = joined {
                // A real failure explains more than "its dependency failed".
                if first
                    .as_ref()
                    .is_none_or(|f| f.dependency && !failure.dependency)
                {
                    first = Some(failure);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// For an optional service whose program is not installed: marks its instances absent and
    /// says why and how to install it. `None` when it can start.
    fn absent(&self, service: &crate::config::Service) -> Option<String> {
        if !service.optional {
            return None;
        }
        let program = crate::config::expand_vars(&service.command[0], |k| std::env::var(k).ok())
            .unwrap_or_else(|_| service.command[0].clone());
        let root = &self.inner.shared.project.root;
        if instance::find_program(&program, root).is_some() {
            return None;
        }
        let reason = match &service.install {
            Some(how) => format!(
                "`{program}` is not installed (install it: {how}); the rest runs without it"
            ),
            None => {
                format!("`{program}` is not installed or not on PATH; the rest runs without it")
            }
        };
        for h in self.handles_of(&service.name) {
            if matches!(h.state(), State::Idle) {
                self.inner.shared.store.upsert(
                    &service.name,
                    msctl_contract::registry::Instance {
                        id: h.id.clone(),
                        pid: None,
                        address: String::new(),
                        state: msctl_contract::registry::InstanceState::Absent,
                        started_at_ms: 0,
                        restarts: 0,
                        last_health: None,
                        reason: Some(reason.clone()),
                    },
                );
            }
        }
        Some(reason)
    }

    /// Waits for the changes to `name` asked before this one, and holds off those asked after.
    async fn one_change_at_a_time(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .inner
            .changing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Stops one service's instances; what depends on it is left running, as `docker compose stop` does.
    pub async fn stop_service(&self, name: &str) {
        let _turn = self.one_change_at_a_time(name).await;
        let stops: Vec<_> = self
            .handles_of(name)
            .into_iter()
            .map(|h| tokio::spawn(async move { h.stop().await }))
            .collect();
        for s in stops {
            let _ = s.await;
        }
    }

    /// Restarts one service's instances with no downtime: see [`Self::replace_service`].
    pub async fn restart_service(&self, name: &str) -> Result<(), StartFailure> {
        self.replace_service(name, None).await
    }

    /// Replaces one service's instances with no downtime, with the same settings or with `spec`
    /// (msctl.toml changed): an extra instance is started first and must become healthy (if it
    /// does not, it is stopped, the running instances are left as they were, and the replacement
    /// fails with the reason); then each instance is replaced in turn (marked stopping, so that
    /// discovery sends it nothing new, drained, started again); then the extra one is drained
    /// and retired. A service on a fixed port cannot run two instances, so it is replaced in
    /// place.
    pub async fn replace_service(
        &self,
        name: &str,
        spec: Option<Arc<crate::config::Service>>,
    ) -> Result<(), StartFailure> {
        let _turn = self.one_change_at_a_time(name).await;
        let handles = self.handles_of(name);
        if handles.iter().all(|h| matches!(h.state(), State::Idle)) {
            if spec.is_some() {
                // Never started: it starts afresh from the configuration.
                self.inner
                    .handles
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(name);
            }
            return self.start(&[name.to_string()]).await;
        }
        let fresh = spec.clone().unwrap_or_else(|| handles[0].spec.clone());
        // A job serves nothing to keep serving: it is run again in place.
        let surge = match handles.first() {
            Some(h)
                if h.spec.port == crate::config::Port::Auto
                    && fresh.port == crate::config::Port::Auto
                    && !fresh.job =>
            {
                let index = handles.iter().map(|h| h.index).max().unwrap_or(0) + 1;
                Some(InstanceHandle::create(
                    fresh.clone(),
                    index,
                    self.inner.shared.clone(),
                ))
            }
            _ => None,
        };
        if let Some(extra) = &surge
            && let Err(reason) = extra.start().await
        {
            self.retire(extra).await;
            return Err(StartFailure {
                instance: extra.id.clone(),
                reason: format!("{reason}; the running instances were left as they were"),
                dependency: false,
            });
        }
        for h in handles {
            if surge.is_some() {
                self.deregister(&h).await;
            }
            let (id, result) = match &spec {
                None => (h.id.clone(), h.restart().await),
                Some(spec) => {
                    h.stop().await;
                    let new =
                        InstanceHandle::create(spec.clone(), h.index, self.inner.shared.clone());
                    self.swap_handle(&h, new.clone());
                    (new.id.clone(), new.start().await)
                }
            };
            if let Err(reason) = result {
                // The extra instance goes on serving in its place.
                if let Some(extra) = surge {
                    self.adopt(extra);
                }
                return Err(StartFailure {
                    instance: id,
                    reason,
                    dependency: false,
                });
            }
        }
        if let Some(extra) = &surge {
            self.retire(extra).await;
        }
        Ok(())
    }

    /// Puts `new` where `old` was in its service's list.
    fn swap_handle(&self, old: &InstanceHandle, new: InstanceHandle) {
        let mut all = self.inner.handles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = all
            .get_mut(&old.service)
            .and_then(|list| list.iter_mut().find(|h| h.id == old.id))
        {
            *slot = new;
        }
    }

    /// Stops a service that left msctl.toml and forgets it.
    pub async fn remove_service(&self, name: &str) {
        self.stop_service(name).await;
        self.inner
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.inner.shared.store.remove_service(name);
    }

    /// Whether `name` has instances that are meant to run (not stopped by `msctl stop`).
    pub fn is_running(&self, name: &str) -> bool {
        self.handles_of(name)
            .iter()
            .any(|h| !matches!(h.state(), State::Idle | State::Stopped { .. }))
    }

    /// The ids of `name`'s instances.
    pub fn instance_ids(&self, name: &str) -> Vec<String> {
        self.handles_of(name).into_iter().map(|h| h.id).collect()
    }

    pub fn project(&self) -> &Project {
        &self.inner.shared.project
    }

    pub fn store(&self) -> &RegistryStore {
        &self.inner.shared.store
    }

    /// Tells whoever shows progress (the foreground `up`) what a watch cycle did, and appends
    /// it to the watch log that `msctl watch` follows.
    pub fn report(&self, cycle: crate::watch::report::Cycle) {
        if let Ok(mut file) =
            msctl_contract::fs::open_private(&self.inner.shared.project.watch_log(), true)
        {
            use std::io::Write;
            let _ = writeln!(
                file,
                "{}",
                serde_json::to_string(&cycle).unwrap_or_default()
            );
        }
        let _ = self.inner.shared.events.send(Event::Watch { cycle });
    }

    /// Requests whose traces started at or after `since_ns` and hold a failed server span,
    /// once the services have exported what they had; `None` when they cannot be counted.
    pub async fn failed_requests_since(&self, since_ns: u64) -> Option<u64> {
        tokio::time::sleep(std::time::Duration::from_millis(
            3 * instance::EXPORT_DELAY_MS,
        ))
        .await;
        self.inner
            .intake
            .flush(std::time::Duration::from_secs(2))
            .await;
        let db = self.inner.shared.project.telemetry_db();
        tokio::task::spawn_blocking(move || {
            crate::telemetry::store::Store::open_read(&db)?
                .failed_traces_since(since_ns)
                .ok()
        })
        .await
        .ok()
        .flatten()
    }

    /// Turns watch mode on or off; on, it is recorded in the registry for `ps`.
    pub async fn set_watching(&self, on: bool) -> Result<(), String> {
        let running = self
            .inner
            .watching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if on && !running {
            let watching = crate::watch::start(self.clone()).await?;
            *self
                .inner
                .watching
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(watching);
        } else if !on {
            // Dropping it ends the watcher, and a build it was running.
            self.inner
                .watching
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        }
        self.inner.shared.store.set_watching(on);
        Ok(())
    }

    /// Runs `replicas` instances of `name`: the missing ones are started (and must become
    /// healthy), the highest-numbered extra ones drained, stopped and forgotten.
    pub async fn scale_service(
        &self,
        name: &str,
        replicas: msctl_contract::control::Replicas,
    ) -> Result<(), (FailureKind, StartFailure)> {
        let refuse = |reason: String| {
            (
                FailureKind::Usage,
                StartFailure {
                    instance: name.to_string(),
                    reason,
                    dependency: false,
                },
            )
        };
        let spec = match self.config().services.get(name) {
            Some(s) => Arc::new(s.clone()),
            None => return Err(refuse(format!("no service `{name}`"))),
        };
        let _turn = self.one_change_at_a_time(name).await;
        let handles = self.handles_of(name);
        let now = handles.len() as u32;
        let wanted = match replicas.resolve(now) {
            Ok(n) => n,
            Err(BadCount::TooFew) => {
                return Err(refuse(format!(
                    "`{name}` runs {now} instance(s); scaling asks for at least one (to stop it: `msctl stop {name}`)"
                )));
            }
            Err(BadCount::TooMany(n)) => {
                return Err(refuse(format!(
                    "`{name}` runs {now} instance(s); {n} is more than msctl runs of one service ({MAX_REPLICAS})"
                )));
            }
        };
        if wanted > 1
            && let crate::config::Port::Fixed(port) = spec.port
        {
            return Err(refuse(format!(
                "`{name}` listens on the fixed port {port}, so it can run only one instance; remove `port` from msctl.toml to scale it"
            )));
        }
        if wanted < now {
            // Taken out of the list first, so that nothing restarts them meanwhile.
            let extra: Vec<InstanceHandle> = {
                let mut all = self.inner.handles.lock().unwrap_or_else(|e| e.into_inner());
                let list = all.entry(name.to_string()).or_default();
                let keep = (wanted as usize).min(list.len());
                list.split_off(keep)
            };
            let stops: Vec<_> = extra
                .into_iter()
                .map(|h| {
                    let sup = self.clone();
                    tokio::spawn(async move { sup.retire(&h).await })
                })
                .collect();
            for s in stops {
                let _ = s.await;
            }
            return Ok(());
        }
        let new: Vec<InstanceHandle> = (now + 1..=wanted)
            .map(|i| InstanceHandle::create(spec.clone(), i, self.inner.shared.clone()))
            .collect();
        {
            let mut all = self.inner.handles.lock().unwrap_or_else(|e| e.into_inner());
            all.entry(name.to_string())
                .or_default()
                .extend(new.iter().cloned());
        }
        let starts: Vec<_> = new
            .into_iter()
            .map(|h| tokio::spawn(async move { (h.start().await, h) }))
            .collect();
        let mut failed = None;
        for s in starts {
            if let Ok((Err(reason), h)) = s.await {
                failed.get_or_insert(StartFailure {
                    instance: h.id.clone(),
                    reason,
                    dependency: false,
                });
            }
        }
        match failed {
            None => Ok(()),
            Some(f) => {
                // Back to what ran before: the new instances are drained and forgotten.
                let extra: Vec<InstanceHandle> = {
                    let mut all = self.inner.handles.lock().unwrap_or_else(|e| e.into_inner());
                    all.entry(name.to_string())
                        .or_default()
                        .split_off(now as usize)
                };
                for h in &extra {
                    self.retire(h).await;
                }
                Err((FailureKind::Start, f))
            }
        }
    }

    /// Takes `h` out of rotation before it is stopped or replaced: marked stopping in the
    /// registry, then a pause for calls already on their way to arrive, which it still answers.
    async fn deregister(&self, h: &InstanceHandle) {
        if self.inner.shared.store.mark_stopping(&h.service, &h.id) {
            tokio::time::sleep(DEREGISTER_PAUSE).await;
        }
    }

    /// Drains and stops an instance that is not one of the service's own, and forgets it.
    async fn retire(&self, extra: &InstanceHandle) {
        self.deregister(extra).await;
        extra.stop().await;
        self.inner
            .shared
            .store
            .remove_instance(&extra.service, &extra.id);
    }

    /// Makes an extra instance one of the service's own.
    fn adopt(&self, extra: InstanceHandle) {
        let mut handles = self.inner.handles.lock().unwrap_or_else(|e| e.into_inner());
        handles
            .entry(extra.service.clone())
            .or_default()
            .push(extra);
    }

    /// Stops everything: dependents before what they depend on, each level in parallel.
    pub async fn stop_all(&self, store: &RegistryStore) {
        store.set_phase(SupervisorPhase::Stopping);
        for level in self.config().stop_levels() {
            let mut stops = Vec::new();
            for name in level {
                for h in self.handles_of(&name) {
                    stops.push(tokio::spawn(async move { h.stop().await }));
                }
            }
            for s in stops {
                let _ = s.await;
            }
        }
    }
}

async fn start_service(
    own: Vec<InstanceHandle>,
    deps: Vec<(String, watch::Receiver<Option<bool>>)>,
) -> Result<(), StartFailure> {
    let first_id = own.first().map(|h| h.id.clone()).unwrap_or_default();
    for (name, mut rx) in deps {
        let ok = rx
            .wait_for(Option::is_some)
            .await
            .map(|v| *v == Some(true))
            .unwrap_or(false);
        if !ok {
            return Err(StartFailure {
                instance: first_id,
                reason: format!("not started because `{name}` failed"),
                dependency: true,
            });
        }
    }
    let starts: Vec<_> = own
        .into_iter()
        .map(|h| {
            tokio::spawn(async move {
                if matches!(h.state(), State::Healthy { .. }) {
                    return Ok(());
                }
                h.start().await.map(|_| ()).map_err(|reason| StartFailure {
                    instance: h.id.clone(),
                    reason,
                    dependency: false,
                })
            })
        })
        .collect();
    let mut result = Ok(());
    for s in starts {
        if let Ok(Err(e)) = s.await {
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}
