//! One module per subcommand, each with one entry function; `dispatch` picks it.

pub mod call;
pub mod completions;
pub mod down;
pub mod health;
pub mod logs;
pub mod ps;
pub mod restart;
pub mod scaffold;
pub mod start;
pub mod stop;
pub mod supervise;
pub mod trace;
pub mod traces;
pub mod up;

use crate::cli::{Cli, Command};
use crate::config::{self, Config};
use crate::error::MsctlError;
use crate::project::Project;
use std::path::PathBuf;

/// What every command is given: where msctl.toml is, if the user said.
#[derive(Debug, Clone)]
pub struct Context {
    pub file: Option<PathBuf>,
}

impl Context {
    pub fn manifest(&self) -> Result<PathBuf, MsctlError> {
        match &self.file {
            Some(f) if f.is_file() => Ok(f.clone()),
            Some(f) => Err(MsctlError::ManifestUnreadable {
                path: f.clone(),
                message: "no such file".into(),
            }),
            None => {
                let cwd = std::env::current_dir()
                    .map_err(|e| MsctlError::Io(format!("cannot read the current folder: {e}")))?;
                Ok(config::find(&cwd)?)
            }
        }
    }

    pub fn project(&self) -> Result<Project, MsctlError> {
        Ok(Project::new(&self.manifest()?))
    }

    pub fn load(&self) -> Result<(Project, Config), MsctlError> {
        let manifest = self.manifest()?;
        let config = config::load(&manifest)?;
        Ok((Project::new(&manifest), config))
    }
}

/// Runs the command; `Ok` is the exit code of a command that finished as designed.
pub async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let ctx = Context { file: cli.file };
    match cli.command {
        Command::Up(args) => up::up(&ctx, args).await,
        Command::Down => down::down(&ctx).await,
        Command::Ps(args) => ps::ps(&ctx, args).await,
        Command::Logs(args) => logs::logs(&ctx, args).await,
        Command::Restart(args) => restart::restart(&ctx, args).await,
        Command::Stop(args) => stop::stop(&ctx, args).await,
        Command::Start(args) => start::start(&ctx, args).await,
        Command::Health(args) => health::health(&ctx, args).await,
        Command::Call(args) => call::call(&ctx, args).await,
        Command::Traces(args) => traces::traces(&ctx, args).await,
        Command::Trace(args) => trace::trace(&ctx, args).await,
        Command::Scaffold(args) => scaffold::scaffold(&ctx, args).await,
        Command::Completions(args) => completions::completions(args),
        Command::Supervise(args) => supervise::supervise(&ctx, args).await,
    }
}

/// Completes on the first SIGINT or SIGTERM. A second SIGINT while stopping exits at once; the
/// services then die with msctl, through their parent-death signal.
pub async fn shutdown_signal() {
    msctl_kit::server::shutdown_signal().await;
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("msctl: second interrupt; exiting now");
            std::process::exit(130);
        }
    });
}

/// Sends `action` (start, stop, restart) for `service` to the running supervisor.
async fn act_on_service(ctx: &Context, service: &str, action: &str) -> Result<(), MsctlError> {
    let project = ctx.project()?;
    let (_, control) = crate::running::require(&project).await?;
    control
        .post(
            &format!("/v1/services/{service}/{action}"),
            serde_json::json!({}),
        )
        .await
        .map_err(|reason| {
            if reason.starts_with("no service") {
                MsctlError::Usage(reason)
            } else {
                MsctlError::Start {
                    instance: service.to_string(),
                    reason,
                    log: None,
                }
            }
        })?;
    Ok(())
}
