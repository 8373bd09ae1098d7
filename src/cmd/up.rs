//! `msctl up`: build, start in dependency order, and supervise, in the foreground or detached.

use crate::cli::UpArgs;
use crate::cmd::Context;
use crate::config::{Config, Port};
use crate::error::MsctlError;
use crate::progress::Progress;
use crate::project::Project;
use crate::running::{self, System};
use crate::supervisor::{self, events::Event};
use crate::{build_step, ports};
use anyhow::Context as _;
use msctl_contract::control::Request;
use msctl_contract::registry::{InstanceState, SupervisorPhase};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

pub async fn up(ctx: &Context, mut args: UpArgs) -> anyhow::Result<u8> {
    let (project, mut config) = ctx.load()?;
    config.scale(&args.scale).map_err(MsctlError::Usage)?;
    // With no names, profiles decide: the services they leave out are named away, so that
    // the supervisor, foreground or detached, starts exactly these and what they depend on.
    // Read here rather than by clap, so that the project's `.env` (loaded after the command
    // line is parsed, once the project is known) can set it, as COMPOSE_PROFILES can.
    if args.profile.is_empty()
        && let Ok(profiles) = std::env::var("MSCTL_PROFILES")
    {
        args.profile = profiles
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
    }
    if args.services.is_empty() {
        let selected = config
            .in_profiles(&args.profile)
            .map_err(MsctlError::Usage)?;
        if selected.is_empty() {
            return Err(MsctlError::Usage(
                "every service has a profile and none is asked for: give --profile NAME (or MSCTL_PROFILES), or name the services".into(),
            )
            .into());
        }
        if selected.len() < config.services.len() {
            args.services = selected;
        }
    }
    if let Some(unknown) = args
        .services
        .iter()
        .find(|s| !config.services.contains_key(*s))
    {
        return Err(MsctlError::unknown_service(unknown, &config).into());
    }
    let order = config
        .start_order(&args.services)
        .map_err(MsctlError::Usage)?;
    // From here on a signal is msctl's to act on: it stops a build or a start-up in progress
    // rather than leaving it running without msctl (one handler throughout, so that none falls
    // between two).
    let mut signals = supervisor::signals::Signals::install()
        .map_err(|e| MsctlError::Io(format!("cannot install signal handlers: {e}")))?;
    match running::inspect(&project).await? {
        System::Running { registry, .. } if registry.supervisor.phase != SupervisorPhase::Ready => {
            // Another `up` is still starting it (or a `down` is stopping it): touch nothing.
            return Err(MsctlError::AlreadyStarting {
                pid: registry.supervisor.pid,
            }
            .into());
        }
        System::Running { registry, control } => {
            // Only services with no live instance at all: one that is starting, restarting or
            // unhealthy is the supervisor's to handle, and must never be restarted from here.
            let missing: Vec<String> = order
                .iter()
                .filter(|s| {
                    registry.services.get(&s.name).is_none_or(|e| {
                        e.instances.iter().all(|i| {
                            matches!(
                                i.state,
                                InstanceState::Stopped
                                    | InstanceState::Failed
                                    | InstanceState::Absent
                            )
                        })
                    })
                })
                .map(|s| s.name.clone())
                .collect();
            // `up --scale` on a running system scales what runs, as `msctl scale` does.
            for (service, _) in &args.scale {
                let running = !missing.contains(service);
                let wanted = config.services[service].replicas;
                if running {
                    let limit = super::call_limit(&config, std::slice::from_ref(service));
                    let request = Request::Scale {
                        service: service.clone(),
                        replicas: msctl_contract::control::Replicas::To(wanted),
                    };
                    let scale = super::control(&project, &config, &control, request, limit);
                    unless_interrupted(
                        &mut signals,
                        scale,
                        format!("while the running system scaled {service}"),
                        format!("the supervisor goes on with it; `msctl ps {service}` shows it"),
                    )
                    .await?;
                    say!("{service} scaled to {wanted}");
                }
            }
            // `up --watch` on a running system turns watching on there, as `msctl watch -d` does.
            if args.watch {
                super::control(
                    &project,
                    &config,
                    &control,
                    Request::Watch { on: true },
                    Duration::from_secs(30),
                )
                .await?;
                say!(
                    "watching for changes; `msctl watch` shows each rebuild, `msctl watch --off` stops it"
                );
            }
            if missing.is_empty() && (!args.scale.is_empty() || args.watch) {
                return Ok(0);
            }
            if missing.is_empty() {
                return Err(MsctlError::AlreadyRunning {
                    pid: registry.supervisor.pid,
                }
                .into());
            }
            if !args.no_build {
                let to_build: Vec<_> = order
                    .iter()
                    .filter(|s| missing.contains(&s.name))
                    .copied()
                    .collect();
                build_step::run(&project, &to_build, &mut signals).await?;
            }
            say!("starting {} in the running system", missing.join(", "));
            let limit = super::call_limit(&config, &missing);
            let start = super::control(
                &project,
                &config,
                &control,
                Request::Start {
                    services: missing.clone(),
                },
                limit,
            );
            unless_interrupted(
                &mut signals,
                start,
                format!("while the running system started {}", missing.join(", ")),
                format!(
                    "the supervisor goes on with it; `msctl stop {}` stops them",
                    missing.join(" ")
                ),
            )
            .await?;
            say!("{} started", missing.join(", "));
            return Ok(0);
        }
        System::Stale { registry } => {
            let cleaned = running::clean_stale(&project, &registry).await;
            if !cleaned.is_empty() {
                say!(
                    "stopped {} left running by a supervisor that died (pid {})",
                    cleaned.join(", "),
                    registry.supervisor.pid
                );
            }
        }
        System::Unresponsive { registry } => {
            return Err(MsctlError::AlreadyRunning {
                pid: registry.supervisor.pid,
            }
            .into());
        }
        System::NotRunning => {}
    }
    if !args.no_build {
        build_step::run(&project, &order, &mut signals).await?;
    }
    for service in &order {
        if let Port::Fixed(port) = service.port {
            if !ports::is_free(port) {
                return Err(MsctlError::PortTaken {
                    service: service.name.clone(),
                    port,
                    holder: ports::holder(port),
                }
                .into());
            }
        }
    }
    let instances: Vec<String> = order
        .iter()
        .flat_map(|s| (1..=s.replicas).map(move |i| format!("{}-{i}", s.name)))
        .collect();
    if args.detach {
        detached(
            &project,
            &args.services,
            &config,
            instances,
            args.watch,
            &mut signals,
        )
        .await
    } else {
        foreground(
            project,
            config,
            args.services,
            instances,
            args.watch,
            signals,
        )
        .await
    }
}

async fn foreground(
    project: Project,
    config: Config,
    services: Vec<String>,
    instances: Vec<String>,
    watch: bool,
    signals: supervisor::signals::Signals,
) -> anyhow::Result<u8> {
    let (tx, mut rx) = crate::supervisor::events::channel(true);
    let mut progress = Progress::new(instances.clone(), true);
    let started = Instant::now();
    let registry_path = project.registry();
    let render = tokio::spawn(async move {
        let mut absent = 0;
        // Lines left out of the live view, said at most once a second.
        let (mut skipped, mut said) = (0, Instant::now());
        while let Some(event) = rx.recv().await {
            progress.handle(&event);
            skipped += rx.skipped();
            if skipped > 0 && said.elapsed() >= Duration::from_secs(1) {
                say!(
                    "… {skipped} lines not shown here, written faster than shown; {}",
                    if crate::supervisor::logs::losing() {
                        "the log files cannot be written either (see above)"
                    } else {
                        "`msctl logs` has every one"
                    }
                );
                (skipped, said) = (0, Instant::now());
            }
            if let Event::Absent { service, .. } = &event {
                let prefix = format!("{service}-");
                absent += instances.iter().filter(|i| i.starts_with(&prefix)).count();
            }
            if let Event::Ready { .. } = event {
                say!(
                    "{} instances healthy in {}; {}Ctrl-C stops them",
                    instances.len() - absent,
                    crate::supervisor::health::ms(started.elapsed()),
                    if watch { "watching for changes; " } else { "" }
                );
                dashboard_line(&registry_path);
            }
        }
    });
    let result = supervisor::run(
        project,
        config,
        services,
        supervisor::Options {
            detached: false,
            watch,
        },
        tx,
        signals,
    )
    .await;
    // The renderer ends when the last sender goes; don't hang on a straggler.
    let _ = tokio::time::timeout(Duration::from_secs(1), render).await;
    result?;
    say!("stopped");
    Ok(0)
}

/// `dashboard: http://127.0.0.1:PORT/?token=…`, from the registry the supervisor wrote, and the
/// app's address when the system has one.
fn dashboard_line(registry: &std::path::Path) {
    if let Ok(r) = msctl_contract::registry::read(registry) {
        if let Some(app) = crate::cmd::open::app_url(&r) {
            say!("app: {app}");
        }
        say!("dashboard: {}", r.supervisor.dashboard_url());
    }
}

/// Starts `msctl supervise` in a session of its own and relays its start-up events until the
/// system is ready or start-up failed.
async fn detached(
    project: &Project,
    services: &[String],
    config: &crate::config::Config,
    instances: Vec<String>,
    watch: bool,
    signals: &mut supervisor::signals::Signals,
) -> anyhow::Result<u8> {
    project
        .create_state_dirs()
        .with_context(|| format!("cannot create {}", project.state.display()))?;
    let log_path = project.supervisor_log();
    let log = msctl_contract::fs::open_private(&log_path, false)
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the msctl executable")?;
    let mut cmd = tokio::process::Command::new(exe);
    if let Some(original) = crate::limits::original() {
        cmd.env(crate::limits::ORIGINAL_ENV, original.to_string());
    }
    cmd.arg("--file")
        .arg(&project.manifest)
        .arg("supervise")
        .args(watch.then_some("--watch"))
        .args(services)
        // The counts `up --scale` set, which the supervisor's own reading of msctl.toml lacks.
        .args(
            config
                .services
                .values()
                .flat_map(|s| ["--scale".to_string(), format!("{}={}", s.name, s.replicas)]),
        )
        .current_dir(&project.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    #[cfg(unix)]
    // SAFETY: setsid is async-signal-safe; it detaches the supervisor from this terminal so that
    // a Ctrl-C here does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().context("cannot start the supervisor")?;
    let stdout = child
        .stdout
        .take()
        .context("the supervisor has no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut progress = Progress::new(instances, false);
    let started = Instant::now();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line.context("cannot read from the supervisor")?,
            signal = signals.next() => {
                progress.finish();
                say!("msctl: {signal}; stopping what was started (again to force)");
                stop_supervisor(&mut child, signals).await;
                return Err(MsctlError::Interrupted {
                    cause: format!("msctl got {signal}"),
                    during: "before the system was ready".into(),
                    undone: "everything it had started is stopped".into(),
                }
                .into());
            }
        };
        let Some(line) = line else { break };
        let Ok(event) = serde_json::from_str::<Event>(&line) else {
            continue;
        };
        progress.handle(&event);
        match event {
            Event::Ready { supervisor_pid } => {
                say!(
                    "ready in {}; supervisor pid {supervisor_pid}; {}`msctl down` stops it",
                    crate::supervisor::health::ms(started.elapsed()),
                    if watch {
                        "watching for changes (`msctl watch` shows each rebuild); "
                    } else {
                        ""
                    }
                );
                dashboard_line(&project.registry());
                return Ok(0);
            }
            Event::Aborted {
                message,
                instance,
                log,
                code,
            } => {
                let err = match instance {
                    Some(instance) => MsctlError::Start {
                        instance,
                        reason: message,
                        log,
                    },
                    None => MsctlError::Relayed {
                        message,
                        code: code.unwrap_or(crate::error::code::FAILURE),
                    },
                };
                let _ = child.wait().await;
                return Err(err.into());
            }
            _ => {}
        }
    }
    let status = child
        .wait()
        .await
        .map(|s| crate::supervisor::process::describe_exit(&s))
        .unwrap_or_default();
    Err(MsctlError::Start {
        instance: "supervisor".into(),
        reason: format!("it {status} before the system was ready"),
        log: Some(log_path),
    }
    .into())
}

/// Stops a detached supervisor still starting the system, as `msctl down` would, and waits for
/// it: it stops every instance it started. Another signal meanwhile forces the stop, as a second
/// Ctrl-C does in the foreground.
async fn stop_supervisor(
    child: &mut tokio::process::Child,
    signals: &mut supervisor::signals::Signals,
) {
    let Some(pid) = child.id() else {
        return;
    };
    let term = || {
        #[cfg(unix)]
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    };
    term();
    loop {
        tokio::select! {
            _ = child.wait() => return,
            _ = signals.next() => term(),
        }
    }
}

/// `change`, a request to the running supervisor, unless a signal comes first: then msctl stops
/// waiting and says what goes on without it (the supervisor finishes what it was asked).
async fn unless_interrupted(
    signals: &mut supervisor::signals::Signals,
    change: impl std::future::Future<Output = Result<(), MsctlError>>,
    during: String,
    undone: String,
) -> Result<(), MsctlError> {
    tokio::select! {
        done = change => done,
        signal = signals.next() => Err(MsctlError::Interrupted {
            cause: format!("msctl got {signal}"),
            during,
            undone,
        }),
    }
}
