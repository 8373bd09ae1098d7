//! The supervisor: starts the system in dependency order, keeps it running, answers the control
//! API, and stops everything in reverse order when asked or when its shutdown future completes.

pub mod control;
pub mod events;
pub mod health;
pub mod instance;
pub mod process;
pub mod store;

use crate::config::Config;
use crate::error::MsctlError;
use crate::project::Project;
use events::Event;
use instance::{InstanceHandle, Phase, Shared};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use store::RegistryStore;
use tokio::sync::{Notify, mpsc, watch};

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
}

/// Holds the project's lock file for as long as the supervisor lives.
#[cfg(unix)]
type Lock = nix::fcntl::Flock<std::fs::File>;

#[cfg(unix)]
fn lock(project: &Project) -> Result<Lock, MsctlError> {
    let file = Project::open_private(&project.lock(), true)
        .map_err(|e| MsctlError::Io(format!("cannot open {}: {e}", project.lock().display())))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        let pid = msctl_kit::registry::read(&project.registry())
            .map(|r| r.supervisor.pid)
            .unwrap_or(0);
        MsctlError::AlreadyRunning { pid }
    })
}

/// Runs the system described by `config` until `shutdown` completes or `msctl down` asks.
/// Start-up failures stop what was started and come back as an error.
pub async fn run(
    project: Project,
    config: Config,
    services: Vec<String>,
    detached: bool,
    events: mpsc::UnboundedSender<Event>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MsctlError> {
    project
        .create_state_dirs()
        .map_err(|e| MsctlError::Io(format!("cannot create {}: {e}", project.state.display())))?;
    let _lock = lock(&project)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| MsctlError::Io(format!("cannot open the control port: {e}")))?;
    let control_addr = listener
        .local_addr()
        .map_err(|e| MsctlError::Io(e.to_string()))?;
    // 128 random bits, as a trace id has: enough that no one guesses it.
    let token = msctl_kit::trace_context::hex(&msctl_kit::trace_context::new_trace_id());
    let store = RegistryStore::create(
        project.registry(),
        msctl_kit::registry::Supervisor {
            pid: std::process::id(),
            control: control_addr.to_string(),
            project: project.root.display().to_string(),
            started_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
            detached,
            token: token.clone(),
        },
    )
    .map_err(|e| {
        MsctlError::Io(format!(
            "cannot write {}: {e}",
            project.registry().display()
        ))
    })?;
    let store = Arc::new(store);
    let shared = Shared {
        project: project.clone(),
        store: store.clone(),
        events: events.clone(),
        prober: Default::default(),
    };
    let (stopped, _) = watch::channel(false);
    let sup = Supervisor {
        inner: Arc::new(Inner {
            config: Mutex::new(config),
            shared,
            handles: Mutex::new(BTreeMap::new()),
            down: Notify::new(),
            stopped,
        }),
    };
    let server = tokio::spawn(control::serve(listener, token, sup.clone()));

    let down = sup.clone();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = down.inner.down.notified() => {}
        }
    };
    tokio::pin!(shutdown);
    let started = tokio::select! {
        result = sup.start(&services) => Some(result),
        _ = &mut shutdown => None,
    };
    let result = match started {
        Some(Err(failure)) => {
            sup.stop_all().await;
            let log = project.log(&failure.instance);
            events
                .send(Event::Aborted {
                    message: failure.reason.clone(),
                    instance: Some(failure.instance.clone()),
                    log: Some(log.clone()),
                })
                .ok();
            Err(MsctlError::Start {
                instance: failure.instance,
                reason: failure.reason,
                log: Some(log),
            })
        }
        Some(Ok(())) => {
            events
                .send(Event::Ready {
                    supervisor_pid: std::process::id(),
                })
                .ok();
            shutdown.await;
            sup.stop_all().await;
            Ok(())
        }
        None => {
            sup.stop_all().await;
            Ok(())
        }
    };
    store.remove();
    sup.inner.stopped.send_replace(true);
    // Give the control API a moment to answer the `down` that may have asked for this.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    server.abort();
    result
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

    /// Stops one service's instances; what depends on it is left running, as `docker compose stop` does.
    pub async fn stop_service(&self, name: &str) -> Result<(), String> {
        let handles = self.known(name)?;
        let stops: Vec<_> = handles
            .into_iter()
            .map(|h| tokio::spawn(async move { h.stop().await }))
            .collect();
        for s in stops {
            let _ = s.await;
        }
        Ok(())
    }

    /// Restarts one service's instances one after another, so replicas keep serving.
    pub async fn restart_service(&self, name: &str) -> Result<(), String> {
        let handles = self.known(name)?;
        if handles
            .iter()
            .all(|h| matches!(h.status().phase, Phase::Idle))
        {
            return self
                .start(&[name.to_string()])
                .await
                .map_err(|f| format!("{}: {}", f.instance, f.reason));
        }
        for h in handles {
            h.restart()
                .await
                .map_err(|reason| format!("{}: {reason}", h.id))?;
        }
        Ok(())
    }

    fn known(&self, name: &str) -> Result<Vec<InstanceHandle>, String> {
        let config = self.config();
        if !config.services.contains_key(name) {
            let names: Vec<&str> = config.services.keys().map(String::as_str).collect();
            return Err(format!(
                "no service `{name}`; services: {}",
                names.join(", ")
            ));
        }
        Ok(self.handles_of(name))
    }

    /// Stops everything: dependents before what they depend on, each level in parallel.
    pub async fn stop_all(&self) {
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
                if h.status().phase == Phase::Healthy {
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
