//! What `msctl scaffold` does: check the name, render a template, and add the new service to
//! the workspace and to msctl.toml, all or nothing.

use crate::config::{self, Config};
use minijinja::{Environment, UndefinedBehavior, context};
use std::path::{Path, PathBuf};

/// The template the repository ships, built in so that scaffold works in any project.
const BUILTIN_NAME: &str = "service";
const BUILTIN: &[(&str, &str)] = &[
    (
        "template.toml",
        include_str!("../templates/service/template.toml"),
    ),
    (
        "Cargo.toml.j2",
        include_str!("../templates/service/Cargo.toml.j2"),
    ),
    (
        "service.toml.j2",
        include_str!("../templates/service/service.toml.j2"),
    ),
    (
        "src/lib.rs.j2",
        include_str!("../templates/service/src/lib.rs.j2"),
    ),
    (
        "src/main.rs.j2",
        include_str!("../templates/service/src/main.rs.j2"),
    ),
    (
        "tests/hello.rs.j2",
        include_str!("../templates/service/tests/hello.rs.j2"),
    ),
];

/// The file of a template that becomes the new `[services.NAME]` table, not a file.
const SERVICE_TABLE: &str = "service.toml.j2";
const TEMPLATE_INFO: &str = "template.toml";
pub const MAX_NAME: usize = 30;

/// Names that would collide with the workspace, cargo's target folder, or msctl itself.
pub const RESERVED: &[&str] = &[
    "gateway",
    "kit",
    "msctl",
    "msctl-kit",
    "msctl-fixture",
    "msctl-bench",
    "fixture",
    "bench",
    "health",
    "services",
    "templates",
    "target",
    "src",
    "tests",
    "test",
    "build",
    "deps",
    "examples",
    "incremental",
    "debug",
    "release",
    "std",
    "core",
    "alloc",
    "proc-macro",
];

/// Rust keywords: a crate named after one does not compile (`fn`, `self`, `async`, …).
const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "box", "break", "const", "continue", "crate", "do", "dyn", "else",
    "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop",
    "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref", "return", "self",
    "static", "struct", "super", "trait", "true", "try", "type", "typeof", "unsafe", "unsized",
    "use", "virtual", "where", "while", "yield", "abstract", "become",
];

/// Names Windows cannot give a file or folder, whatever the extension.
fn windows_reserved(name: &str) -> bool {
    matches!(name, "con" | "prn" | "aux" | "nul")
        || ["com", "lpt"].iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|n| n.len() == 1 && n.chars().all(|c| c.is_ascii_digit()))
        })
}

/// Left inside a service folder while scaffold writes the manifests; found by a later run, it
/// means that run was interrupted, and what it added is taken back.
pub const UNFINISHED: &str = ".msctl-scaffold-unfinished";

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
            Self::DuplicateDep(_) => Some("give each --dep once".into()),
            Self::NoTemplate { .. } => Some("`msctl scaffold --list-templates` lists them".into()),
            _ => None,
        }
    }

    /// Bad requests are usage errors; a broken template or workspace is a project problem.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Template { .. } | Self::Workspace(_) => crate::error::code::CONFIG,
            Self::Io { .. } => crate::error::code::FAILURE,
            _ => crate::error::code::USAGE,
        }
    }
}

/// Checks a new service name: short plain ASCII, lowercase letters, digits and dashes,
/// starting with a letter; no paths, spaces or lookalike characters.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let bad = |why: String| {
        Err(ScaffoldError::BadName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty".into());
    }
    if name.contains(['/', '\\']) || name.starts_with('.') || name.contains("..") {
        return bad("it looks like a path; give a bare name such as `billing`".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace()) {
        return bad(format!("it contains a space ({:?}); use a dash instead", c));
    }
    if let Some(c) = name.chars().find(|c| !c.is_ascii()) {
        return bad(format!(
            "it contains `{c}` (U+{:04X}), which is not plain ASCII and may pass for another letter",
            c as u32
        ));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return bad(format!(
            "it has uppercase letters; use `{}`",
            name.to_ascii_lowercase()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("it must start with a letter".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return bad(format!(
            "it contains `{c}`; use lowercase letters, digits and dashes"
        ));
    }
    if name.ends_with('-') || name.contains("--") {
        return bad("dashes go between letters or digits".into());
    }
    if name.len() > MAX_NAME {
        return bad(format!(
            "it is {} characters long; at most {MAX_NAME}",
            name.len()
        ));
    }
    if RESERVED.contains(&name) {
        return Err(ScaffoldError::Reserved(name.to_string()));
    }
    if RUST_KEYWORDS.contains(&name) {
        return bad("it is a Rust keyword, so its crate would not compile".into());
    }
    if windows_reserved(name) {
        return bad("Windows cannot use it as a folder name".into());
    }
    Ok(())
}

/// A template: its files, relative to its folder, with their text.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    pub description: String,
    /// Where it comes from: a folder, or built in.
    pub origin: String,
    pub files: Vec<(String, String)>,
}

/// The templates of a project (`templates/*/` beside msctl.toml), and the built-in one unless the
/// project has its own of that name.
pub fn templates(root: &Path) -> Result<Vec<Template>, ScaffoldError> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("templates")) {
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            found.push(read_template(&dir)?);
        }
    }
    if !found.iter().any(|t| t.name == BUILTIN_NAME) {
        let files: Vec<(String, String)> = BUILTIN
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        found.push(Template {
            name: BUILTIN_NAME.into(),
            description: describe(BUILTIN_NAME, &files)?,
            origin: "built in".into(),
            files,
        });
    }
    Ok(found)
}

fn read_template(dir: &Path) -> Result<Template, ScaffoldError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let broken = |file: String, message: String| ScaffoldError::Template {
        template: name.clone(),
        file,
        message,
    };
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| broken(d.display().to_string(), e.to_string()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| {
                broken(
                    path.display().to_string(),
                    format!("cannot read it as text: {e}"),
                )
            })?;
            let relative = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            files.push((relative, text));
        }
    }
    files.sort();
    let description = describe(&name, &files)?;
    if !files.iter().any(|(p, _)| p == SERVICE_TABLE) {
        return Err(broken(
            format!("{}/{SERVICE_TABLE}", dir.display()),
            "missing: it gives the new service's table in msctl.toml".into(),
        ));
    }
    Ok(Template {
        name,
        description,
        origin: dir.display().to_string(),
        files,
    })
}

fn describe(name: &str, files: &[(String, String)]) -> Result<String, ScaffoldError> {
    let Some((_, text)) = files.iter().find(|(p, _)| p == TEMPLATE_INFO) else {
        return Ok(String::new());
    };
    let info: toml::Table = toml::from_str(text).map_err(|e| ScaffoldError::Template {
        template: name.to_string(),
        file: TEMPLATE_INFO.into(),
        message: e.message().to_string(),
    })?;
    Ok(info
        .get("description")
        .and_then(|d| d.as_str())
        .unwrap_or_default()
        .to_string())
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
    let all = templates(root)?;
    let Some(template) = all.iter().find(|t| t.name == request.template) else {
        let known: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        return Err(ScaffoldError::NoTemplate {
            name: request.template.clone(),
            known: known.join(", "),
        });
    };
    let rendered = render(template, request)?;
    let table = rendered
        .iter()
        .find(|(p, _)| p == SERVICE_TABLE)
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    let files: Vec<(String, String)> = rendered
        .into_iter()
        .filter(|(p, _)| p != SERVICE_TABLE && p != TEMPLATE_INFO)
        .collect();
    let manifest = add_service_table(config, template, name, &table)?;
    let cargo = add_workspace_member(root, name)?;
    Ok(Plan {
        service_dir,
        files,
        manifest: (config.path.clone(), manifest),
        cargo,
        table,
    })
}

/// Renders every file of `template`; `.j2` files through the template engine, others as they are.
fn render(template: &Template, request: &Request) -> Result<Vec<(String, String)>, ScaffoldError> {
    let broken = |file: &str, e: &dyn std::fmt::Display| ScaffoldError::Template {
        template: template.name.clone(),
        file: format!("{}/{file}", template.origin),
        message: e.to_string(),
    };
    let mut env = Environment::new();
    // A misspelt variable in a template is an error, not an empty string.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let ctx = context! {
        name => &request.name,
        crate => request.name.replace('-', "_"),
        deps => &request.deps,
        port => request.port,
    };
    let mut out = Vec::new();
    for (path, text) in &template.files {
        match path.strip_suffix(".j2") {
            Some(target) => {
                env.add_template_owned(path.clone(), text.clone())
                    .map_err(|e| broken(path, &DetailedError(&e)))?;
                let mut rendered = env
                    .get_template(path)
                    .and_then(|t| t.render(&ctx))
                    .map_err(|e| broken(path, &DetailedError(&e)))?;
                // The engine drops a file's final newline; source files end with one.
                if !rendered.ends_with('\n') {
                    rendered.push('\n');
                }
                if target.ends_with(".rs") {
                    rendered = rustfmt(&rendered);
                }
                out.push((
                    if path == SERVICE_TABLE {
                        path.clone()
                    } else {
                        target.to_string()
                    },
                    rendered,
                ));
            }
            None => out.push((path.clone(), text.clone())),
        }
    }
    Ok(out)
}

/// Rust source as rustfmt formats it, so that a new service passes `cargo fmt --check` whatever
/// its name's length; unchanged where rustfmt is not installed or fails.
fn rustfmt(source: &str) -> String {
    use std::io::Write;
    let child = std::process::Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return source.to_string();
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(source.as_bytes());
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() && !out.stdout.is_empty() => {
            String::from_utf8(out.stdout).unwrap_or_else(|_| source.to_string())
        }
        _ => source.to_string(),
    }
}

/// A template error with its line, as minijinja reports it.
struct DetailedError<'a>(&'a minijinja::Error);

impl std::fmt::Display for DetailedError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.line() {
            Some(line) => write!(
                f,
                "line {line}: {}",
                self.0.detail().unwrap_or(&self.0.kind().to_string())
            ),
            None => write!(f, "{}", self.0),
        }
    }
}

/// msctl.toml with `[services.NAME]` added, comments and layout kept, checked as a whole.
fn add_service_table(
    config: &Config,
    template: &Template,
    name: &str,
    table: &str,
) -> Result<String, ScaffoldError> {
    let text = std::fs::read_to_string(&config.path).map_err(|e| ScaffoldError::Io {
        path: config.path.display().to_string(),
        message: e.to_string(),
    })?;
    let broken = |message: String| ScaffoldError::Template {
        template: template.name.clone(),
        file: format!("{}/{SERVICE_TABLE}", template.origin),
        message,
    };
    let fragment: toml_edit::DocumentMut = table.parse().map_err(|e: toml_edit::TomlError| {
        broken(format!("it renders to invalid TOML: {}", e.message()))
    })?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        ScaffoldError::Workspace(format!(
            "{} is not valid TOML: {}",
            config.path.display(),
            e.message()
        ))
    })?;
    let mut new_table = fragment.as_table().clone();
    new_table.set_implicit(false);
    new_table.decor_mut().set_prefix("\n");
    let services = doc.entry("services").or_insert_with(|| {
        let mut t = toml_edit::Table::new();
        t.set_implicit(true);
        toml_edit::Item::Table(t)
    });
    let Some(services) = services.as_table_mut() else {
        return Err(ScaffoldError::Workspace(format!(
            "`services` in {} is not a table",
            config.path.display()
        )));
    };
    services.insert(name, toml_edit::Item::Table(new_table));
    let edited = doc.to_string();
    config::parse(&config.path, &edited)
        .map_err(|e| broken(format!("the msctl.toml it makes is invalid: {}", e.message)))?;
    Ok(edited)
}

/// The workspace Cargo.toml with `services/NAME` added to its members, unless a glob covers it.
fn add_workspace_member(
    root: &Path,
    name: &str,
) -> Result<Option<(PathBuf, String)>, ScaffoldError> {
    let path = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|_| {
        ScaffoldError::Workspace(format!(
            "scaffold adds a crate to a Cargo workspace, and there is no {}",
            path.display()
        ))
    })?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        ScaffoldError::Workspace(format!(
            "{} is not valid TOML: {}",
            path.display(),
            e.message()
        ))
    })?;
    let member = format!("services/{name}");
    let Some(members) = doc
        .get_mut("workspace")
        .and_then(|w| w.get_mut("members"))
        .and_then(|m| m.as_array_mut())
    else {
        return Err(ScaffoldError::Workspace(format!(
            "{} has no [workspace] members list",
            path.display()
        )));
    };
    let covered = members
        .iter()
        .filter_map(|m| m.as_str())
        .any(|m| m == member || m.strip_suffix("/*").is_some_and(|dir| dir == "services"));
    if covered {
        return Ok(None);
    }
    members.push(member);
    Ok(Some((path, doc.to_string())))
}

/// Writes the plan: the service folder appears whole (written aside, then renamed), then the two
/// manifests, each replaced atomically. On any failure what was done is undone.
pub fn apply(plan: &Plan) -> Result<(), ScaffoldError> {
    let io = |path: &Path, e: std::io::Error| ScaffoldError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let parent = plan.service_dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let staging = parent.join(format!(
        ".{}.scaffolding-{}",
        plan.service_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
        for (relative, text) in &plan.files {
            let path = staging.join(relative);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            }
            std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        }
        let marker = staging.join(UNFINISHED);
        std::fs::write(&marker, "").map_err(|e| io(&marker, e))?;
        std::fs::rename(&staging, &plan.service_dir).map_err(|e| io(&plan.service_dir, e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    #[cfg(debug_assertions)]
    if std::env::var("MSCTL_FAULT").is_ok_and(|f| f == "slow-scaffold") {
        // Widens the window between the folder and the manifests, for the interruption test.
        std::thread::sleep(std::time::Duration::from_millis(800));
    }
    let undo_dir = || {
        let _ = std::fs::remove_dir_all(&plan.service_dir);
    };
    let original_cargo = match &plan.cargo {
        Some((path, text)) => {
            let before = std::fs::read_to_string(path).map_err(|e| io(path, e));
            let replaced = before.and_then(|before| {
                replace_file(path, text)
                    .map(|_| before)
                    .map_err(|e| io(path, e))
            });
            match replaced {
                Ok(before) => Some((path.clone(), before)),
                Err(e) => {
                    undo_dir();
                    return Err(e);
                }
            }
        }
        None => None,
    };
    if let Err(e) = replace_file(&plan.manifest.0, &plan.manifest.1) {
        if let Some((path, before)) = original_cargo {
            let _ = replace_file(&path, &before);
        }
        undo_dir();
        return Err(io(&plan.manifest.0, e));
    }
    let marker = plan.service_dir.join(UNFINISHED);
    std::fs::remove_file(&marker).map_err(|e| io(&marker, e))
}

/// Takes back what an interrupted scaffold left: staging folders of msctl processes that are
/// gone, and any service folder still marked unfinished, with its workspace member and its
/// msctl.toml table. Returns what was (or, with `dry_run`, would be) removed.
pub fn recover(config: &Config, dry_run: bool) -> Vec<String> {
    let services = config.root.join("services");
    let mut undone = Vec::new();
    let Ok(entries) = std::fs::read_dir(&services) else {
        return undone;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let stray_staging = file_name
            .strip_prefix('.')
            .and_then(|rest| rest.rsplit_once(".scaffolding-"))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
            .is_some_and(|pid| !crate::supervisor::process::alive(pid));
        if stray_staging {
            if !dry_run {
                let _ = std::fs::remove_dir_all(&path);
            }
            undone.push(format!("left {}", path.display()));
        } else if path.join(UNFINISHED).exists() {
            if !dry_run {
                let _ = remove_member(&config.root, &file_name);
                let _ = remove_table(&config.path, &file_name);
                let _ = std::fs::remove_dir_all(&path);
            }
            undone.push(format!("left the service `{file_name}` half added"));
        }
    }
    undone
}

fn remove_member(root: &Path, name: &str) -> Result<(), ScaffoldError> {
    let path = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| ScaffoldError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| ScaffoldError::Workspace(e.to_string()))?;
    let member = format!("services/{name}");
    if let Some(members) = doc
        .get_mut("workspace")
        .and_then(|w| w.get_mut("members"))
        .and_then(|m| m.as_array_mut())
    {
        members.retain(|m| m.as_str() != Some(member.as_str()));
    }
    replace_file(&path, &doc.to_string()).map_err(|e| ScaffoldError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn remove_table(manifest: &Path, name: &str) -> Result<(), ScaffoldError> {
    let text = std::fs::read_to_string(manifest).map_err(|e| ScaffoldError::Io {
        path: manifest.display().to_string(),
        message: e.to_string(),
    })?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| ScaffoldError::Workspace(e.to_string()))?;
    if let Some(services) = doc.get_mut("services").and_then(|s| s.as_table_mut()) {
        services.remove(name);
    }
    replace_file(manifest, &doc.to_string()).map_err(|e| ScaffoldError::Io {
        path: manifest.display().to_string(),
        message: e.to_string(),
    })
}

/// Replaces a file's contents atomically: a reader sees the old file or the new one.
fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    msctl_contract::fs::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("billing"), Ok(()));
        assert_eq!(check_name("order-events2"), Ok(()));
        for bad in [
            "",
            "../x",
            "/abs",
            "a b",
            "Billing",
            "2fa",
            "bill_ing",
            "bill-",
            "bi--ll",
            "bіlling",
            &"x".repeat(31),
            "fn",
            "self",
            "crate",
            "match",
            "type",
            "async",
            "con",
            "nul",
            "aux",
            "com1",
            "lpt9",
        ] {
            assert!(
                matches!(check_name(bad), Err(ScaffoldError::BadName { .. })),
                "{bad:?} should be rejected"
            );
        }
        assert_eq!(
            check_name("gateway"),
            Err(ScaffoldError::Reserved("gateway".into()))
        );
    }

    #[test]
    fn the_built_in_template_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let all = templates(dir.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "service");
        assert!(all[0].files.iter().any(|(p, _)| p == SERVICE_TABLE));
    }
}
