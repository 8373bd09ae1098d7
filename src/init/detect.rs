//! What a folder runs, found without asking: the binaries of a Cargo package or workspace, Node
//! packages with a `start` script, Python projects with an obvious entry point. Each guess says
//! what it was based on; the health check is `/health` only where the code visibly serves it.

use super::{Draft, Found, SharedBuild, service_name};
use std::path::{Path, PathBuf};

/// Folders never looked into: build output, dependencies, state, history.
const SKIP: [&str; 8] = [
    "target",
    "node_modules",
    ".git",
    ".msctl",
    ".venv",
    "venv",
    "__pycache__",
    "dist",
];
/// How deep below the root packages are looked for.
const DEPTH: usize = 3;

/// Everything `root` runs. A Procfile, when there is one, is what the project says it runs,
/// and wins.
pub fn detect(root: &Path) -> Found {
    if root.join("Procfile").is_file()
        && let Ok(text) = std::fs::read_to_string(root.join("Procfile"))
    {
        let mut found = super::procfile::import(&text, &[]);
        found.source = "this folder's Procfile".into();
        super::procfile::add_cargo_build(&mut found, root);
        return found;
    }
    let mut found = Found {
        source: "the files in this folder".into(),
        ..Found::default()
    };
    if root.join("Cargo.toml").is_file() {
        let (services, build) = cargo(root, "");
        if !services.is_empty() {
            found.build = Some(build);
        }
        found.services.extend(services);
    }
    // Cargo folders below the root, when the root is none; a workspace's members are its own.
    let mut cargo_dirs: Vec<PathBuf> = Vec::new();
    for dir in folders(root) {
        let rel = relative(root, &dir);
        if !rel.is_empty()
            && !root.join("Cargo.toml").is_file()
            && dir.join("Cargo.toml").is_file()
            && !cargo_dirs.iter().any(|c| dir.starts_with(c))
        {
            let (services, build) = cargo(root, &rel);
            if !services.is_empty() {
                cargo_dirs.push(dir.clone());
                for mut s in services {
                    s.build = Some(build.0.clone());
                    found.services.push(s);
                }
            }
        }
        if dir.join("package.json").is_file()
            && let Some(draft) = node(root, &rel)
        {
            found.services.push(draft);
        }
        if (dir.join("pyproject.toml").is_file() || dir.join("requirements.txt").is_file())
            && let Some(draft) = python(root, &rel)
        {
            found.services.push(draft);
        }
    }
    if found.services.is_empty() {
        found.source = "a folder with nothing msctl could run yet".into();
    }
    found
}

/// What the folder `dir` (relative to root; `""` is the root) runs: the first kind found.
pub fn detect_in(root: &Path, dir: &str) -> Option<(Vec<Draft>, Option<SharedBuild>)> {
    let path = root.join(dir);
    if path.join("Cargo.toml").is_file() {
        let (services, build) = cargo(root, dir);
        if !services.is_empty() {
            return Some((services, Some(build)));
        }
    }
    if path.join("package.json").is_file()
        && let Some(d) = node(root, dir)
    {
        return Some((vec![d], None));
    }
    if (path.join("pyproject.toml").is_file() || path.join("requirements.txt").is_file())
        && let Some(d) = python(root, dir)
    {
        return Some((vec![d], None));
    }
    None
}

fn relative(root: &Path, dir: &Path) -> String {
    dir.strip_prefix(root)
        .unwrap_or(dir)
        .to_string_lossy()
        .replace('\\', "/")
}

/// `dir/file`, or `file` at the root.
fn join(dir: &str, file: &str) -> String {
    if dir.is_empty() {
        file.to_string()
    } else {
        format!("{dir}/{file}")
    }
}

/// The root and the folders below it, to `DEPTH`, in name order.
fn folders(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut level = vec![root.to_path_buf()];
    for _ in 0..DEPTH {
        let mut next = Vec::new();
        for dir in &level {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            // A link is not followed: one to a folder above would make the walk endless.
            let mut dirs: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    !SKIP.contains(&name) && !name.starts_with('.')
                })
                .collect();
            dirs.sort();
            next.extend(dirs);
        }
        out.extend(next.iter().cloned());
        level = next;
    }
    out
}

/// The source files below `dir` with one of `extensions`, skipping dependency folders. Links
/// are not followed (one to a folder above made the walk endless), and the walk stops after
/// `MAX_ENTRIES`: what it looks for is near the top of a project.
fn sources(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                out.sort();
                return out;
            }
            let p = e.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let Ok(kind) = e.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !SKIP.contains(&name) && !name.starts_with('.') {
                    stack.push(p);
                }
            } else if extensions.iter().any(|x| name.ends_with(x)) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// How many files and folders [`sources`] looks at, at most, in one project.
const MAX_ENTRIES: usize = 20_000;

/// The first file that visibly serves `/health`: the path in quotes, as routes are written.
fn serves_health(files: &[PathBuf]) -> Option<PathBuf> {
    files.iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        ["\"/health\"", "'/health'", "`/health`"]
            .iter()
            .any(|q| text.contains(q))
            .then(|| f.clone())
    })
}

fn mentions(files: &[PathBuf], needle: &str) -> bool {
    files.iter().any(|f| {
        std::fs::read_to_string(f)
            .map(|t| t.contains(needle))
            .unwrap_or(false)
    })
}

/// The health check and the notes that explain it.
fn health(root: &Path, files: &[PathBuf], notes: &mut Vec<String>) -> String {
    match serves_health(files) {
        Some(f) => {
            notes.push(format!("health: /health, served in {}", relative(root, &f)));
            "/health".into()
        }
        None => {
            notes.push("check: no /health route seen; health is a connection to its port".into());
            "tcp".into()
        }
    }
}

fn port_note(files: &[PathBuf], notes: &mut Vec<String>) {
    if !mentions(files, "PORT") {
        notes.push(
            "check: PORT is not read anywhere in its code; msctl gives every instance its port there"
                .into(),
        );
    }
}

/// Every binary of the Cargo package or workspace in `dir`, built by one shared `cargo build`.
fn cargo(root: &Path, dir: &str) -> (Vec<Draft>, SharedBuild) {
    let packages = crate::watch::targets::workspace(&root.join(dir));
    let workspace = packages.len() > 1;
    let mut build = vec!["cargo".to_string(), "build".to_string()];
    if !dir.is_empty() {
        build.extend(["--manifest-path".into(), join(dir, "Cargo.toml")]);
    }
    if workspace {
        build.push("--workspace".into());
    }
    build.push("--bins".into());
    let target = if dir.is_empty() {
        "target".to_string()
    } else {
        join(dir, "target")
    };
    let mut drafts = Vec::new();
    for p in &packages {
        let files = sources(&p.dir, &[".rs"]);
        for bin in &p.bins {
            let Some(name) = service_name(bin) else {
                continue;
            };
            let mut d = Draft::new(
                &name,
                vec![format!("${{CARGO_TARGET_DIR:-{target}}}/debug/{bin}")],
            );
            d.notes.push(format!(
                "the binary `{bin}` of the Cargo package `{}`",
                p.name
            ));
            d.health = health(root, &files, &mut d.notes);
            port_note(&files, &mut d.notes);
            drafts.push(d);
        }
    }
    let why = if workspace {
        "one cargo build for every binary of the workspace; msctl runs it once for all"
    } else {
        "one cargo build for the package's binaries; msctl runs it once for all"
    };
    (drafts, (build, why.to_string()))
}

/// A Node package with a `start` script: `npm start`, with `npm ci` (or `npm install` with no
/// lock file) as its build.
fn node(root: &Path, dir: &str) -> Option<Draft> {
    let path = root.join(dir);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path.join("package.json")).ok()?).ok()?;
    let start = manifest["scripts"]["start"].as_str()?;
    let folder = if dir.is_empty() {
        root.file_name()?.to_string_lossy().to_string()
    } else {
        dir.to_string()
    };
    let name = manifest["name"]
        .as_str()
        .and_then(service_name)
        .or_else(|| service_name(&folder))?;
    let prefix: Vec<String> = if dir.is_empty() {
        vec![]
    } else {
        vec!["--prefix".into(), dir.to_string()]
    };
    let mut command = vec!["npm".to_string()];
    command.extend(prefix.iter().cloned());
    command.push("start".into());
    let mut d = Draft::new(&name, command);
    d.notes.push(format!(
        "the Node package in {}: `npm start` runs `{start}`",
        join(dir, "package.json")
    ));
    let mut build = vec!["npm".to_string()];
    if path.join("package-lock.json").is_file() {
        build.push("ci".into());
    } else {
        build.push("install".into());
        d.notes
            .push("no package-lock.json: the build is `npm install`; with one, `npm ci`".into());
    }
    build.extend(["--no-audit".into(), "--no-fund".into()]);
    build.extend(prefix);
    d.build = Some(build);
    let files = sources(&path, &[".js", ".mjs", ".cjs", ".ts"]);
    d.health = health(root, &files, &mut d.notes);
    port_note(&files, &mut d.notes);
    Some(d)
}

/// A Python project with an obvious entry point: a venv in its folder, built from its
/// requirements, running the entry point in the way its framework starts.
fn python(root: &Path, dir: &str) -> Option<Draft> {
    let path = root.join(dir);
    let entry = ["app.py", "main.py", "server.py", "wsgi.py"]
        .into_iter()
        .find(|f| path.join(f).is_file())?;
    let text = std::fs::read_to_string(path.join(entry)).unwrap_or_default();
    let folder = if dir.is_empty() {
        root.file_name()?.to_string_lossy().to_string()
    } else {
        dir.to_string()
    };
    let name = service_name(&folder)?;
    let venv = join(dir, ".venv/bin/python");
    let module = entry.trim_end_matches(".py");
    let mut notes = vec![if dir.is_empty() {
        "the Python project in this folder".to_string()
    } else {
        format!("the Python project in {dir}/")
    }];
    let command: Vec<String> = if text.contains("__main__") {
        notes.push(format!("runs {entry}, which starts itself"));
        vec![venv.clone(), join(dir, entry)]
    } else if text.contains("FastAPI(") || text.contains("Starlette(") {
        notes.push(format!(
            "an ASGI app in {entry}: served by uvicorn on the port msctl gives"
        ));
        let mut c = vec![venv.clone(), "-m".into(), "uvicorn".into()];
        if !dir.is_empty() {
            c.extend(["--app-dir".into(), dir.to_string()]);
        }
        c.extend([
            format!("{module}:app"),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "{port}".into(),
        ]);
        c
    } else if text.contains("Flask(") {
        notes.push(format!(
            "a Flask app in {entry}: served by `flask run` on the port msctl gives"
        ));
        vec![
            venv.clone(),
            "-m".into(),
            "flask".into(),
            "--app".into(),
            join(dir, module),
            "run".into(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "{port}".into(),
        ]
    } else {
        notes.push(format!(
            "check: runs {entry}; it must listen on the port in PORT"
        ));
        vec![venv.clone(), join(dir, entry)]
    };
    let install = if path.join("requirements.txt").is_file() {
        "-r requirements.txt"
    } else {
        "."
    };
    let cd = if dir.is_empty() {
        String::new()
    } else {
        format!("cd {dir} && ")
    };
    let mut d = Draft::new(&name, command);
    d.notes = notes;
    d.build = Some(vec![
        "sh".into(),
        "-c".into(),
        format!(
            "{cd}{{ [ -x .venv/bin/python ] || python3 -m venv .venv; }} && .venv/bin/python -m pip install --quiet --disable-pip-version-check {install}"
        ),
    ]);
    let files = sources(&path, &[".py"]);
    d.health = health(root, &files, &mut d.notes);
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, files: &[(&str, &str)]) {
        for (path, text) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn node_and_python_projects_are_found_with_their_health() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                (
                    "web/package.json",
                    r#"{"name": "@shop/web", "scripts": {"start": "node server.js"}}"#,
                ),
                ("web/package-lock.json", "{}"),
                (
                    "web/server.js",
                    "app.get('/health', ok); app.listen(process.env.PORT)",
                ),
                ("web/node_modules/x/index.js", "'/health'"),
                ("tools/package.json", r#"{"name": "tools", "scripts": {}}"#),
                ("api/requirements.txt", "fastapi\n"),
                ("api/main.py", "app = FastAPI()\n"),
                ("jobs/pyproject.toml", "[project]\nname='jobs'\n"),
                ("jobs/app.py", "if __name__ == '__main__':\n    run()\n"),
            ],
        );
        let found = detect(dir.path());
        let names: Vec<&str> = found.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "jobs", "web"]);
        let web = &found.services[2];
        assert_eq!(web.command, ["npm", "--prefix", "web", "start"]);
        assert_eq!(
            web.build.as_ref().unwrap(),
            &["npm", "ci", "--no-audit", "--no-fund", "--prefix", "web"]
        );
        assert_eq!(web.health, "/health");
        let api = &found.services[0];
        assert_eq!(api.health, "tcp");
        assert!(api.command.contains(&"api/.venv/bin/python".to_string()));
        assert!(api.command.contains(&"main:app".to_string()));
        assert!(api.command.contains(&"{port}".to_string()));
        let jobs = &found.services[1];
        assert_eq!(jobs.command, ["jobs/.venv/bin/python", "jobs/app.py"]);
        assert!(
            jobs.build.as_ref().unwrap()[2]
                .contains("install --quiet --disable-pip-version-check .")
        );
        let text = super::super::render(&found);
        crate::config::parse(&dir.path().join("msctl.toml"), &text)
            .unwrap_or_else(|e| panic!("{}\n{text}", e.message));
    }

    #[test]
    fn a_procfile_is_what_the_project_runs() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("Procfile", "web: python3 -m http.server $PORT\n"),
                ("package.json", r#"{"scripts": {"start": "node x.js"}}"#),
            ],
        );
        let found = detect(dir.path());
        assert_eq!(found.services.len(), 1);
        assert_eq!(found.services[0].name, "web");
    }
}
