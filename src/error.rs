//! The failures msctl expects, each with its documented exit code and, where it helps, a hint.

use crate::config::{ConfigError, LoadError};
use std::path::PathBuf;

/// Exit codes: one rule per situation, documented in docs/exit-codes.md and the README.
pub use msctl_contract::exit as code;

#[derive(Debug, thiserror::Error)]
pub enum MsctlError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no msctl.toml here or above; run msctl init")]
    NoManifest(PathBuf),
    #[error("cannot read {}: {message}", path.display())]
    ManifestUnreadable { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("build failed: `{command}` {status}")]
    Build {
        command: String,
        status: String,
        log: PathBuf,
    },
    /// A signal (or `msctl down`) came while `up` or `build` was still at work; what it had
    /// started is stopped.
    #[error("{cause} {during}; {undone}")]
    Interrupted {
        cause: String,
        during: String,
        undone: String,
    },
    #[error("`{instance}` did not start: {reason}")]
    Start {
        instance: String,
        reason: String,
        log: Option<PathBuf>,
    },
    #[error("port {port} for `{service}` is already taken{}", holder.as_ref().map(|h| format!(" by {h}")).unwrap_or_default())]
    PortTaken {
        service: String,
        port: u16,
        holder: Option<String>,
    },
    #[error("nothing is running in {}", .0.display())]
    NotRunning(PathBuf),
    #[error("the system is already running (supervisor pid {pid})")]
    AlreadyRunning { pid: u32 },
    #[error("another msctl (pid {pid}) is starting the system")]
    AlreadyStarting { pid: u32 },
    /// A service name that msctl.toml does not have.
    #[error("no service `{name}` in {}", manifest.display())]
    UnknownService {
        name: String,
        manifest: PathBuf,
        known: Vec<String>,
    },
    /// An OTLP receiver answered, and refused the spans or some of them.
    #[error("{0}")]
    Rejected(String),
    /// msctl.toml, read again by a running supervisor, is not valid.
    #[error("{0}")]
    ConfigReload(String),
    /// The supervisor is starting or stopping the whole system and takes no other request.
    #[error("{0}")]
    Busy(String),
    /// An error the detached supervisor met, relayed by `up -d` with its exit code.
    #[error("{message}")]
    Relayed { message: String, code: u8 },
    /// A bug in msctl: a panic, reported instead of taken for success.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{unhealthy} of {total} instances are not healthy")]
    Unhealthy { unhealthy: usize, total: usize },
    #[error("{0}")]
    Unreachable(String),
    /// The supervisor named in the registry has died.
    #[error("{0}")]
    Gone(String),
    /// A file or folder msctl needs could not be read or written.
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Scaffold(#[from] crate::scaffold::ScaffoldError),
}

impl From<LoadError> for MsctlError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(dir) => Self::NoManifest(dir),
            LoadError::Io { path, source } => Self::ManifestUnreadable {
                path,
                message: source.to_string(),
            },
            LoadError::Invalid(c) => Self::Config(c),
        }
    }
}

/// Lines of a failed instance's log shown with the error.
const LOG_TAIL: usize = 20;
/// Lines of a failed build's output shown with the error: a compiler's errors and its summary,
/// not a whole verbose build (the hint names the file that has all of it).
const BUILD_TAIL: usize = 200;

impl MsctlError {
    /// The error for `name` when it is not a service of `config`.
    pub fn unknown_service(name: &str, config: &crate::config::Config) -> Self {
        Self::UnknownService {
            name: name.to_string(),
            manifest: config.path.clone(),
            known: config.services.keys().cloned().collect(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::NoManifest(_) | Self::ManifestUnreadable { .. } => code::CONFIG,
            Self::Usage(_) => code::USAGE,
            Self::Build { .. } => code::BUILD,
            Self::Interrupted { .. } => code::INTERRUPTED,
            Self::Start { .. } | Self::PortTaken { .. } => code::START,
            Self::NotRunning(_) => code::NOT_RUNNING,
            Self::AlreadyRunning { .. } | Self::AlreadyStarting { .. } => code::ALREADY_RUNNING,
            Self::UnknownService { .. } => code::USAGE,
            Self::ConfigReload(_) => code::CONFIG,
            Self::Relayed { code, .. } => *code,
            Self::Busy(_) => code::ALREADY_RUNNING,
            Self::Rejected(_) => code::REJECTED,
            Self::Internal(_) => code::FAILURE,
            Self::Unhealthy { .. } => code::UNHEALTHY,
            Self::Unreachable(_) => code::UNREACHABLE,
            Self::Gone(_) => code::NOT_RUNNING,
            Self::Io(_) => code::FAILURE,
            Self::NotFound(_) => code::FAILURE,
            Self::Scaffold(e) => e.exit_code(),
        }
    }

    /// Extra lines printed under the error: a source snippet, the build output, a log tail.
    pub fn detail(&self) -> Option<String> {
        match self {
            Self::Config(c) => Some(c.snippet.clone()),
            Self::Build { log, .. } => {
                let (lines, _) = crate::supervisor::logs::last_lines(log, BUILD_TAIL);
                (!lines.is_empty()).then(|| {
                    let said = if lines.len() == BUILD_TAIL {
                        format!("the last {BUILD_TAIL} lines of the build output")
                    } else {
                        "build output".to_string()
                    };
                    format!("{said}:\n{}", lines.join("\n").trim_end())
                })
            }
            Self::Start {
                instance,
                log: Some(log),
                ..
            } => {
                let (tail, _) = crate::supervisor::logs::last_lines(log, LOG_TAIL);
                (!tail.is_empty()).then(|| {
                    format!(
                        "last lines of {instance}'s log:\n{}",
                        tail.iter()
                            .map(|l| format!("  {}", crate::supervisor::logs::without_stamp(l)))
                            .collect::<Vec<_>>()
                            .join("\n")
                    )
                })
            }
            _ => None,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Config(c) => c.hint.clone(),
            Self::NoManifest(dir) => Some(format!(
                "looked in {} and every folder above it; `msctl init` writes one for the project there, or pass -f path/to/msctl.toml",
                dir.display()
            )),
            Self::Build { log, .. } => {
                Some(format!("the whole build output is in {}", log.display()))
            }
            Self::Start { log: Some(log), .. } => Some(format!(
                "the whole log is in {}; see also `msctl logs`",
                log.display()
            )),
            Self::PortTaken { .. } => {
                Some("stop what holds the port, or use `port = \"auto\"` in msctl.toml".into())
            }
            Self::NotRunning(_) => Some("start it with `msctl up -d`".into()),
            Self::AlreadyRunning { .. } => {
                Some("see it with `msctl ps`; stop it with `msctl down`".into())
            }
            Self::AlreadyStarting { .. } => Some(
                "wait for it to finish, then see the system with `msctl ps`".into(),
            ),
            Self::UnknownService { name, known, .. } => Some(
                match crate::config::did_you_mean(name, known.iter().map(String::as_str)) {
                    Some(near) => format!("did you mean `{near}`? services: {}", known.join(", ")),
                    None => format!("services: {}", known.join(", ")),
                },
            ),
            Self::Internal(_) => Some(
                "this is a bug in msctl; the supervisor's log (.msctl/supervisor.log) has the details"
                    .into(),
            ),
            Self::Unhealthy { .. } => Some("see `msctl ps` and `msctl logs SERVICE`".into()),
            Self::Scaffold(e) => e.hint(),
            _ => None,
        }
    }
}
