//! Templates: the project's own (`templates/*/` beside msctl.toml) and the built-in ones, which
//! are the repository's `templates/*/` embedded whole, so the two cannot drift apart; and
//! rendering one for a new service.

use super::{Request, ScaffoldError};
use include_dir::{Dir, include_dir};
use minijinja::{Environment, UndefinedBehavior, context};
use std::path::{Path, PathBuf};

/// The templates the repository ships, built in so that scaffold works in any project.
static BUILTIN: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// The file of a template that becomes the new `[services.NAME]` table, not a file.
pub const SERVICE_TABLE: &str = "service.toml.j2";
pub const TEMPLATE_INFO: &str = "template.toml";

/// Every built-in template: its name, and its files by their path inside it, in path order.
fn builtin() -> Vec<(String, Vec<(String, String)>)> {
    fn walk(root: &Path, dir: &Dir<'_>, out: &mut Vec<(String, String)>) {
        for file in dir.files() {
            let relative = file.path().strip_prefix(root).unwrap_or(file.path());
            out.push((
                relative.to_string_lossy().replace('\\', "/"),
                file.contents_utf8().unwrap_or_default().to_string(),
            ));
        }
        for sub in dir.dirs() {
            walk(root, sub, out);
        }
    }
    let mut all: Vec<(String, Vec<(String, String)>)> = BUILTIN
        .dirs()
        .map(|dir| {
            let mut files = Vec::new();
            walk(dir.path(), dir, &mut files);
            files.sort();
            let name = dir
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, files)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// A template: its files, relative to its folder, with their text.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    pub description: String,
    /// Where it comes from: a folder, or built in.
    pub origin: String,
    pub files: Vec<(String, String)>,
    /// Whether the new service is a crate of the Cargo workspace (`cargo = false` in
    /// template.toml for other languages).
    pub cargo: bool,
}

/// The templates of a project (`templates/*/` beside msctl.toml), and the built-in ones unless
/// the project has its own of that name; then those that cannot be read, by name, each with
/// why. One broken template does not stand in the way of the others.
pub fn templates(root: &Path) -> (Vec<Template>, Vec<(String, ScaffoldError)>) {
    let (mut found, mut broken) = (Vec::new(), Vec::new());
    if let Ok(entries) = std::fs::read_dir(root.join("templates")) {
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            match read_template(&dir) {
                Ok(t) => found.push(t),
                Err(e) => broken.push((
                    dir.file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default(),
                    e,
                )),
            }
        }
    }
    for (name, files) in builtin() {
        if found.iter().any(|t| t.name == name) || broken.iter().any(|(n, _)| *n == name) {
            continue;
        }
        match describe(&name, &files) {
            Ok(info) => found.push(Template {
                name,
                description: info.description,
                origin: "built in".into(),
                files,
                cargo: info.cargo,
            }),
            Err(e) => broken.push((name, e)),
        }
    }
    (found, broken)
}

/// Files an editor or a file manager leaves in a folder, which are no part of a template.
fn is_litter(name: &str) -> bool {
    matches!(name, ".DS_Store" | "Thumbs.db" | "desktop.ini")
        || name.ends_with('~')
        || name.ends_with(".swp")
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
            // A link to a folder is not followed (one to a folder above would never end); as
            // a file it cannot be read, and the error names it.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
                continue;
            }
            if is_litter(&entry.file_name().to_string_lossy()) {
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
    let info = describe(&name, &files)?;
    if !files.iter().any(|(p, _)| p == SERVICE_TABLE) {
        return Err(broken(
            format!("{}/{SERVICE_TABLE}", dir.display()),
            "missing: it gives the new service's table in msctl.toml".into(),
        ));
    }
    Ok(Template {
        name,
        description: info.description,
        origin: dir.display().to_string(),
        files,
        cargo: info.cargo,
    })
}

/// What template.toml says of a template.
struct Info {
    description: String,
    cargo: bool,
}

fn describe(name: &str, files: &[(String, String)]) -> Result<Info, ScaffoldError> {
    let Some((_, text)) = files.iter().find(|(p, _)| p == TEMPLATE_INFO) else {
        return Ok(Info {
            description: String::new(),
            cargo: true,
        });
    };
    let info: toml::Table = toml::from_str(text).map_err(|e| ScaffoldError::Template {
        template: name.to_string(),
        file: TEMPLATE_INFO.into(),
        message: e.message().to_string(),
    })?;
    Ok(Info {
        description: info
            .get("description")
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_string(),
        cargo: info.get("cargo").and_then(|c| c.as_bool()).unwrap_or(true),
    })
}

/// Where a new Rust crate goes: into the project's Cargo workspace, or on its own.
#[derive(Debug, Clone, Copy)]
pub(super) struct Setting {
    /// No Cargo workspace at the root: the crate is a workspace of its own.
    pub standalone: bool,
    /// msctl.toml's `[defaults]` has no `build`: the service brings its own.
    pub own_build: bool,
}

/// Renders every file of `template`; `.j2` files through the template engine, others as they are.
pub(super) fn render(
    template: &Template,
    request: &Request,
    setting: Setting,
) -> Result<Vec<(String, String)>, ScaffoldError> {
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
        standalone => setting.standalone,
        own_build => setting.own_build,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_template_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let (all, broken) = templates(dir.path());
        assert!(
            broken.is_empty(),
            "{:?}",
            broken
                .iter()
                .map(|(n, e)| format!("{n}: {e}"))
                .collect::<Vec<_>>()
        );
        let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["node", "python", "service"]);
        for t in &all {
            assert!(
                t.files.iter().any(|(p, _)| p == SERVICE_TABLE),
                "{}",
                t.name
            );
        }
        let (node, python, service) = (&all[0], &all[1], &all[2]);
        assert!(
            !node.cargo && !python.cargo,
            "only Rust services are crates"
        );
        assert!(node.files.iter().any(|(p, _)| p == "server.js"));
        assert!(python.files.iter().any(|(p, _)| p == "app.py"));
        assert!(service.cargo);
        assert!(service.files.iter().any(|(p, _)| p == "src/lib.rs.j2"));
    }
}
