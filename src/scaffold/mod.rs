//! What `msctl scaffold` does: check the name, render a template, and add the new service to
//! the workspace and to msctl.toml, all or nothing. The naming rules, the templates, the
//! manifest edits and the writing each have a module.

mod manifests;
mod names;
mod templates;
mod write;

pub use names::{MAX_NAME, RESERVED, check_name};
pub use templates::{Template, templates};
pub use write::{UNFINISHED, apply, recover};

use crate::config::{self, Config};
use std::path::PathBuf;
use templates::{SERVICE_TABLE, Setting, TEMPLATE_INFO, render};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScaffoldError {
    #[error("--port {0} is not a port; give 1 to 65535, or leave --port out for an automatic one")]
    BadPort(u16),
    #[error("--dep `{0}` is given twice")]
    DuplicateDep(String),
    #[error("`{name}` is not a valid service name: {why}")]
    BadName { name: String, why: String },
    #[error("`{0}` is reserved: msctl, the workspace or cargo use that name")]
    Reserved(String),
    #[error("a service `{name}` exists already ({place})")]
    Exists { name: String, place: String },
    #[error("`{name}` and the service `{other}` would be mixed up: instances of `{short}` are named {short}-1, {short}-2, …", short = if name.len() < other.len() { name } else { other })]
    LooksLikeInstance { name: String, other: String },
    #[error("--dep `{dep}` is not a service in msctl.toml; services: {}", known.join(", "))]
    UnknownDep { dep: String, known: Vec<String> },
    #[error("--port {port} is already given to `{other}` in msctl.toml")]
    PortTaken { port: u16, other: String },
    #[error("no template `{name}`; templates: {known}")]
    NoTemplate { name: String, known: String },
    #[error("the template `{template}` is broken: {file}: {message}")]
    Template {
        template: String,
        file: String,
        message: String,
    },
    #[error("{0}")]
    Workspace(String),
    #[error("cannot write {path}: {message}")]
    Io { path: String, message: String },
}

impl ScaffoldError {
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::UnknownDep { dep, known } => {
                config::did_you_mean(dep, known.iter().map(String::as_str))
                    .map(|k| format!("did you mean `{k}`?"))
            }
            Self::PortTaken { .. } => Some("leave --port out for an automatic port".into()),
            Self::Exists { .. } | Self::Reserved(_) => Some("pick another name".into()),
            Self::LooksLikeInstance { .. } => {
                Some("pick a name that does not end in a dash and a number".into())
            }
            Self::DuplicateDep(_) => Some("give each --dep once".into()),
            Self::NoTemplate { .. } => Some("`msctl scaffold --list-templates` lists them".into()),
            _ => None,
        }
    }

    /// Bad requests are usage errors; a broken template or workspace is a project problem.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Template { .. } | Self::Workspace(_) => msctl_contract::exit::CONFIG,
            Self::Io { .. } => msctl_contract::exit::FAILURE,
            _ => msctl_contract::exit::USAGE,
        }
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct Request {
    pub name: String,
    pub deps: Vec<String>,
    pub port: Option<u16>,
    pub template: String,
}

/// Everything scaffold will write, computed before anything is.
#[derive(Debug, Clone)]
pub struct Plan {
    pub service_dir: PathBuf,
    /// Paths relative to `service_dir`, with their contents.
    pub files: Vec<(String, String)>,
    pub manifest: (PathBuf, String),
    /// The workspace Cargo.toml with the new member, when it needs one.
    pub cargo: Option<(PathBuf, String)>,
    /// The new `[services.NAME]` table, as added to msctl.toml.
    pub table: String,
}

pub fn plan(config: &Config, request: &Request) -> Result<Plan, ScaffoldError> {
    let name = &request.name;
    check_name(name)?;
    let root = &config.root;
    if config.services.contains_key(name) {
        return Err(ScaffoldError::Exists {
            name: name.clone(),
            place: format!("[services.{name}] in {}", config.path.display()),
        });
    }
    if let Some(other) = config.services.keys().find(|other| {
        config::looks_like_instance(name, other) || config::looks_like_instance(other, name)
    }) {
        return Err(ScaffoldError::LooksLikeInstance {
            name: name.clone(),
            other: other.clone(),
        });
    }
    let service_dir = root.join("services").join(name);
    if service_dir.exists() {
        return Err(ScaffoldError::Exists {
            name: name.clone(),
            place: format!("{} is there", service_dir.display()),
        });
    }
    for (i, dep) in request.deps.iter().enumerate() {
        if request.deps[..i].contains(dep) {
            return Err(ScaffoldError::DuplicateDep(dep.clone()));
        }
        if !config.services.contains_key(dep) {
            return Err(ScaffoldError::UnknownDep {
                dep: dep.clone(),
                known: config.services.keys().cloned().collect(),
            });
        }
    }
    if let Some(port) = request.port {
        if port == 0 {
            return Err(ScaffoldError::BadPort(port));
        }
        if let Some(other) = config
            .services
            .values()
            .find(|s| s.port == config::Port::Fixed(port))
        {
            return Err(ScaffoldError::PortTaken {
                port,
                other: other.name.clone(),
            });
        }
    }
    let (all, broken) = templates(root);
    if let Some((_, e)) = broken.into_iter().find(|(n, _)| *n == request.template) {
        return Err(e);
    }
    let Some(template) = all.iter().find(|t| t.name == request.template) else {
        let known: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        return Err(ScaffoldError::NoTemplate {
            name: request.template.clone(),
            known: known.join(", "),
        });
    };
    let setting = Setting {
        standalone: !manifests::is_workspace(root),
        own_build: !manifests::has_default_build(&config.path),
    };
    let rendered = render(template, request, setting)?;
    let table = rendered
        .iter()
        .find(|(p, _)| p == SERVICE_TABLE)
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    let files: Vec<(String, String)> = rendered
        .into_iter()
        .filter(|(p, _)| p != SERVICE_TABLE && p != TEMPLATE_INFO)
        .collect();
    let manifest = manifests::add_service_table(config, template, name, &table)?;
    let cargo = if template.cargo && !setting.standalone {
        manifests::add_workspace_member(root, name)?
    } else {
        None
    };
    Ok(Plan {
        service_dir,
        files,
        manifest: (config.path.clone(), manifest),
        cargo,
        table,
    })
}
