//! One module per subcommand, each with one entry function; `dispatch` picks it.

pub mod build;
pub mod call;
pub mod completions;
pub mod config;
pub mod dashboard;
pub mod down;
pub mod events;
pub mod export;
pub mod fault;
pub mod health;
pub mod init;
pub mod logs;
pub mod open;
pub mod ps;
pub mod restart;
pub mod run;
pub mod scaffold;
pub mod scale;
pub mod start;
pub mod stop;
pub mod supervise;
pub mod top;
pub mod trace;
pub mod traces;
pub mod up;
pub mod watch;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::error::MsctlError;
use crate::project::Project;
use crate::supervisor::control::ControlClient;
use msctl_contract::control::{Failure, FailureKind, Request, Response};
use std::path::PathBuf;
use std::time::Duration;

/// What every command is given: where msctl.toml is, if the user said.
#[derive(Debug, Clone)]
pub struct Context {
    pub file: Option<PathBuf>,
}

impl Context {
    pub fn manifest(&self) -> Result<PathBuf, MsctlError> {
        match &self.file {
            Some(f) if f.is_file() => Ok(f.clone()),
            // `-f some/folder` means the msctl.toml in it, as `cargo --manifest-path` does not
            // but users expect.
            Some(f) if f.is_dir() && f.join(crate::config::MANIFEST).is_file() => {
                Ok(f.join(crate::config::MANIFEST))
            }
            Some(f) if f.is_dir() => Err(MsctlError::ManifestUnreadable {
                path: f.clone(),
                message: format!(
                    "it is a folder with no {} in it; give the file, or the folder that holds one",
                    crate::config::MANIFEST
                ),
            }),
            Some(f) => Err(MsctlError::ManifestUnreadable {
                path: f.clone(),
                message: "no such file".into(),
            }),
            None => {
                let cwd = std::env::current_dir()
                    .map_err(|e| MsctlError::Io(format!("cannot read the current folder: {e}")))?;
                Ok(crate::config::find(&cwd)?)
            }
        }
    }

    /// The project a command about the running system acts on. With no msctl.toml here or
    /// above, a system still running here (its `.msctl/registry.json`) is the project: the
    /// manifest moved away (a `git checkout`, a `git stash -u`) must not leave `down`, `ps` and
    /// `logs` unable to reach what runs.
    pub fn project(&self) -> Result<Project, MsctlError> {
        match self.manifest() {
            Ok(manifest) => Ok(Project::new(&manifest)),
            Err(e) if self.file.is_none() => {
                let cwd = std::env::current_dir()
                    .map_err(|e| MsctlError::Io(format!("cannot read the current folder: {e}")))?;
                let Some(root) = cwd
                    .ancestors()
                    .find(|dir| dir.join(".msctl").join("registry.json").is_file())
                else {
                    return Err(e);
                };
                let project = Project::new(&root.join(crate::config::MANIFEST));
                say!(
                    "note: no {} in {}; acting on the system that runs there",
                    crate::config::MANIFEST,
                    root.display()
                );
                Ok(project)
            }
            Err(e) => Err(e),
        }
    }

    pub fn load(&self) -> Result<(Project, Config), MsctlError> {
        let manifest = self.manifest()?;
        let config = crate::config::load(&manifest)?;
        Ok((Project::new(&manifest), config))
    }

    /// The same for a command that adds services: msctl.toml may have none yet.
    pub fn load_to_edit(&self) -> Result<(Project, Config), MsctlError> {
        let manifest = self.manifest()?;
        let config = crate::config::load_to_edit(&manifest)?;
        Ok((Project::new(&manifest), config))
    }
}

/// Runs the command; `Ok` is the exit code of a command that finished as designed.
pub async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let ctx = Context { file: cli.file };
    match cli.command {
        Command::Up(args) => up::up(&ctx, args).await,
        Command::Build(args) => build::build(&ctx, args).await,
        Command::Down => down::down(&ctx).await,
        Command::Ps(args) => ps::ps(&ctx, args).await,
        Command::Logs(args) => logs::logs(&ctx, args).await,
        Command::Restart(args) => restart::restart(&ctx, args).await,
        Command::Stop(args) => stop::stop(&ctx, args).await,
        Command::Scale(args) => scale::scale(&ctx, args).await,
        Command::Kill(args) => fault::kill(&ctx, args).await,
        Command::Fault(args) => fault::fault(&ctx, args).await,
        Command::Start(args) => start::start(&ctx, args).await,
        Command::Watch(args) => watch::watch(&ctx, args).await,
        Command::Health(args) => health::health(&ctx, args).await,
        Command::Call(args) => call::call(&ctx, args).await,
        Command::Run(args) => run::run(&ctx, args).await,
        Command::Traces(args) => traces::traces(&ctx, args).await,
        Command::Trace(args) => trace::trace(&ctx, args).await,
        Command::Events(args) => events::events(&ctx, args).await,
        Command::Top(args) => top::top(&ctx, args).await,
        Command::Export(args) => export::export(&ctx, args).await,
        Command::Init(args) => init::init(&ctx, args).await,
        Command::Open(args) => open::open(&ctx, args).await,
        Command::Dashboard(args) => dashboard::dashboard(&ctx, args).await,
        Command::Scaffold(args) => scaffold::scaffold(&ctx, args).await,
        Command::Config(args) => config::config(&ctx, args),
        Command::Completions(args) => completions::completions(args),
        Command::Supervise(args) => supervise::supervise(&ctx, args).await,
    }
}

/// How long a control call that starts or stops `services` may take: each instance's start and
/// stop time, one after another, and some slack. Every call has a limit; none waits forever.
pub fn call_limit(config: &Config, services: &[String]) -> Duration {
    let names: Vec<&String> = if services.is_empty() {
        config.services.keys().collect()
    } else {
        services.iter().collect()
    };
    let work: Duration = names
        .iter()
        .filter_map(|n| config.services.get(*n))
        .map(|s| (s.start_timeout + s.stop_timeout) * s.replicas)
        .sum();
    work + Duration::from_secs(10)
}

/// The error for a control call that failed; `project` locates the failed instance's log.
pub fn control_error(project: &Project, config: &Config, failure: Failure) -> MsctlError {
    match failure.kind {
        FailureKind::UnknownService => MsctlError::unknown_service(&failure.message, config),
        FailureKind::Config => MsctlError::ConfigReload(failure.message),
        FailureKind::Usage => MsctlError::Usage(failure.message),
        FailureKind::Busy => MsctlError::Busy(failure.message),
        FailureKind::Unrecorded => MsctlError::Io(failure.message),
        FailureKind::Refused => MsctlError::Unreachable(format!(
            "the supervisor refused the request: {}",
            failure.message
        )),
        FailureKind::Start => {
            let instance = failure.instance.unwrap_or_default();
            MsctlError::Start {
                log: (!instance.is_empty()).then(|| project.log(&instance)),
                instance,
                reason: failure.message,
            }
        }
    }
}

/// Sends `request` to the running supervisor and turns its answer into a result.
pub async fn control(
    project: &Project,
    config: &Config,
    client: &ControlClient,
    request: Request,
    limit: Duration,
) -> Result<(), MsctlError> {
    match client.send(&request, limit).await {
        Ok(Response::Failed(f)) => Err(control_error(project, config, f)),
        Ok(_) => Ok(()),
        Err(e) => Err(MsctlError::Unreachable(e.to_string())),
    }
}

/// The usage error for the first of `named` that msctl.toml does not have, with a suggestion.
fn check_names(config: &Config, named: &[String]) -> Result<(), MsctlError> {
    match named.iter().find(|n| !config.services.contains_key(*n)) {
        Some(unknown) => Err(MsctlError::unknown_service(unknown, config)),
        None => Ok(()),
    }
}

/// The services `named` (every one when none is), in the order `up` starts them, each once.
/// Names are checked against msctl.toml before anything is done, so that a misspelt one is a
/// usage error whether or not anything runs, and nothing is half done.
fn services_in_order(config: &Config, named: &[String]) -> Result<Vec<String>, MsctlError> {
    check_names(config, named)?;
    let everything = config.start_order(&[]).map_err(MsctlError::Usage)?;
    Ok(everything
        .into_iter()
        .map(|s| s.name.clone())
        .filter(|n| named.is_empty() || named.contains(n))
        .collect())
}

/// Sends a request about one `service` (`scale`) to the running supervisor, the name checked
/// against msctl.toml first.
async fn act_on_service(
    ctx: &Context,
    service: &str,
    request: impl FnOnce(String) -> Request,
) -> Result<(), MsctlError> {
    let (project, config) = ctx.load()?;
    if !config.services.contains_key(service) {
        return Err(MsctlError::unknown_service(service, &config));
    }
    let (_, client) = crate::running::require(&project).await?;
    let limit = call_limit(&config, &[service.to_string()]);
    control(
        &project,
        &config,
        &client,
        request(service.to_string()),
        limit,
    )
    .await
}

/// Sends `stop` or `restart` for each of `named` (every service when none is) to the running
/// supervisor, one service after another, in start order or, with `reverse`, the other way
/// (dependents stop before what they depend on). Says each one done as it is; the first failure
/// ends the run, with the ones before it done and the rest untouched.
async fn act_on_services(
    ctx: &Context,
    named: &[String],
    reverse: bool,
    request: impl Fn(String) -> Request,
    done: &str,
) -> Result<(), MsctlError> {
    let (project, config) = ctx.load()?;
    let mut services = services_in_order(&config, named)?;
    if reverse {
        services.reverse();
    }
    let (registry, client) = crate::running::require(&project).await?;
    // Every service means every one the system has started: not those `up` left out (another
    // profile, or `up SERVICE`), which `msctl start NAME` starts.
    if named.is_empty() {
        services.retain(|s| registry.services.contains_key(s));
    }
    for service in services {
        let limit = call_limit(&config, std::slice::from_ref(&service));
        control(&project, &config, &client, request(service.clone()), limit).await?;
        match absent_because(&project, &service) {
            Some(reason) => say!("{service} skipped: {reason}"),
            None => say!("{service} {done}"),
        }
    }
    Ok(())
}

/// Why `service` did not run, when it is an optional one whose program is not installed.
fn absent_because(project: &Project, service: &str) -> Option<String> {
    use msctl_contract::registry::InstanceState;
    let registry = msctl_contract::registry::read(&project.registry()).ok()?;
    let instances = &registry.services.get(service)?.instances;
    instances
        .iter()
        .all(|i| i.state == InstanceState::Absent)
        .then(|| instances.first()?.reason.clone())
        .flatten()
}
