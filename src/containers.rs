//! Where a service's image comes from on a cluster, and `msctl export containerfiles`: a
//! Containerfile for every image msctl can build (a binary of the Cargo workspace, or a Python
//! or Node program in its own folder), which answers on `PORT` as the service does on one machine.

use crate::config::{Config, Service};
use crate::watch::targets::Package;
use std::collections::BTreeMap;
use std::path::Path;

/// The user the images run as; the same as the manifests' `runAsUser`.
const USER: u32 = 65532;
const RUST_IMAGE: &str = "docker.io/library/rust:1-slim-bookworm";
const RUST_RUNTIME: &str = "gcr.io/distroless/cc-debian12:nonroot";
const PYTHON_IMAGE: &str = "docker.io/library/python:3.12-slim-bookworm";
const NODE_IMAGE: &str = "docker.io/library/node:22-bookworm-slim";
/// What no image needs from the build context: build output, state, history, local venvs.
const IGNORE: &str = "target/\n.msctl/\n.git/\n**/node_modules/\n**/.venv/\n**/__pycache__/\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Python,
    Node,
}

/// Where the image of one service comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `image = "…"` in msctl.toml: used as it is, with the command's arguments.
    Given(String),
    /// A binary of the Cargo workspace: `cargo build --release -p PACKAGE --bin BIN`.
    Rust { package: String, bin: String },
    /// A program in its own folder (`dir`, relative to the project's root) with its
    /// dependencies listed there; `command` is how the image starts it.
    Script {
        lang: Lang,
        dir: String,
        command: Vec<String>,
    },
}

impl Source {
    /// The image's name without prefix or tag: the binary for Rust (services running one
    /// binary share its image), the service otherwise.
    pub fn image_name<'a>(&'a self, service: &'a str) -> Option<&'a str> {
        match self {
            Self::Given(_) => None,
            Self::Rust { bin, .. } => Some(bin),
            Self::Script { .. } => Some(service),
        }
    }
}

/// The source of every service, or an error naming the first one that has none.
pub fn sources(config: &Config, packages: &[Package]) -> Result<BTreeMap<String, Source>, String> {
    config
        .services
        .values()
        .map(|s| Ok((s.name.clone(), source(s, &config.root, packages)?)))
        .collect()
}

fn source(service: &Service, root: &Path, packages: &[Package]) -> Result<Source, String> {
    if let Some(image) = &service.image {
        return Ok(Source::Given(image.clone()));
    }
    let program = Path::new(&service.command[0])
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if let Some(p) = packages
        .iter()
        .find(|p| p.bins.iter().any(|b| b == program))
    {
        return Ok(Source::Rust {
            package: p.name.clone(),
            bin: program.to_string(),
        });
    }
    script(service, root).ok_or_else(|| {
        format!(
            "service `{}` runs `{}`, which is neither a binary of this workspace nor a Python or Node program in a folder with its requirements.txt, pyproject.toml or package.json; give it `image = \"…\"` in msctl.toml",
            service.name,
            service.command.join(" ")
        )
    })
}

/// A Python or Node program: the first `.py`/`.js` argument that is a file of the project,
/// whose folder (or one above it, below the root) lists its dependencies.
fn script(service: &Service, root: &Path) -> Option<Source> {
    let relative = |a: &str| a.strip_prefix("./").unwrap_or(a).to_string();
    let (lang, dir) = service.command.iter().find_map(|arg| {
        let arg = relative(arg);
        let lang = if arg.ends_with(".py") {
            Lang::Python
        } else if [".js", ".mjs", ".cjs"].iter().any(|e| arg.ends_with(e)) {
            Lang::Node
        } else {
            return None;
        };
        if Path::new(&arg).is_absolute() || arg.contains("..") || !root.join(&arg).is_file() {
            return None;
        }
        let markers: &[&str] = match lang {
            Lang::Python => &["requirements.txt", "pyproject.toml"],
            Lang::Node => &["package.json"],
        };
        let mut dir = Path::new(&arg).parent();
        while let Some(d) = dir {
            if markers.iter().any(|m| root.join(d).join(m).is_file()) {
                return Some((lang, d.to_string_lossy().to_string()));
            }
            dir = d.parent();
        }
        None
    })?;
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let command = service
        .command
        .iter()
        .map(|arg| {
            let arg = relative(arg);
            if let Some(rest) = arg.strip_prefix(&format!("{prefix}.venv/bin/")) {
                format!("/opt/venv/bin/{rest}")
            } else if lang == Lang::Python && (arg == "python" || arg == "python3") {
                "/opt/venv/bin/python".to_string()
            } else if let Some(rest) = arg.strip_prefix(&prefix).filter(|_| !prefix.is_empty()) {
                format!("/app/{rest}")
            } else if dir.is_empty() && root.join(&arg).exists() {
                format!("/app/{arg}")
            } else {
                arg
            }
        })
        .collect();
    Some(Source::Script { lang, dir, command })
}

/// An image's full name, as both exports write it: `<prefix><name>:<tag>`.
pub fn image_ref(prefix: &str, name: &str, tag: &str) -> String {
    format!("{prefix}{name}:{tag}")
}

/// What the command line adds to msctl.toml: how the images are tagged.
#[derive(Debug, Clone)]
pub struct Options {
    pub image_prefix: String,
    pub tag: String,
    /// The output folder relative to the project's root (`containers`), for build.sh; `None`
    /// when it is outside the project, and the script is to be run from the root.
    pub dir_in_project: Option<String>,
}

/// The files to write and the notes to say, as for the manifests.
pub use crate::kubernetes::Export;

pub fn export(
    config: &Config,
    sources: &BTreeMap<String, Source>,
    opts: &Options,
) -> Result<Export, String> {
    let mut files = BTreeMap::new();
    let mut notes = Vec::new();
    // One image per name, built for the first service that needs it.
    let mut images: BTreeMap<&str, (&Service, &Source)> = BTreeMap::new();
    for service in config.services.values() {
        let source = &sources[&service.name];
        match source.image_name(&service.name) {
            Some(image) => {
                images.entry(image).or_insert((service, source));
            }
            None => notes.push(format!(
                "{}: runs the image {} from msctl.toml; nothing to build",
                service.name,
                service.image.as_deref().unwrap_or_default()
            )),
        }
    }
    let mut script = String::from(
        "#!/bin/sh\n# Builds every image of msctl.toml, tagged as `msctl export kubernetes` names them.\n# Uses podman, or docker; CONTAINER_ENGINE=... picks another.\nset -eu\n",
    );
    match &opts.dir_in_project {
        Some(dir) => {
            let up = vec![".."; Path::new(dir).components().count()].join("/");
            script.push_str(&format!("cd \"$(dirname \"$0\")/{up}\"\n"));
        }
        None => script.push_str("# Run it from the project's root.\n"),
    }
    script.push_str(
        "engine=${CONTAINER_ENGINE:-$(command -v podman || command -v docker || echo docker)}\nbuild() {\n  case \"$engine\" in\n    *podman*) \"$engine\" build --ignorefile \"$1.dockerignore\" -f \"$1\" -t \"$2\" . ;;\n    *) \"$engine\" build -f \"$1\" -t \"$2\" . ;;\n  esac\n}\n",
    );
    for (image, (service, source)) in &images {
        let file = format!("{image}.Containerfile");
        let port = crate::kubernetes::port_of(service);
        let text = match source {
            Source::Rust { package, bin } => rust(image, package, bin, port),
            Source::Script { lang, dir, command } => match lang {
                Lang::Python => python(image, dir, command, port)?,
                Lang::Node => node(image, dir, command, port)?,
            },
            Source::Given(_) => unreachable!("given images are not built"),
        };
        let path = match &opts.dir_in_project {
            Some(dir) => format!("{dir}/{file}"),
            None => format!("$(dirname \"$0\")/{file}"),
        };
        script.push_str(&format!(
            "build \"{path}\" \"{}\"\n",
            image_ref(&opts.image_prefix, image, &opts.tag)
        ));
        files.insert(format!("{file}.dockerignore"), IGNORE.to_string());
        files.insert(file, text);
    }
    files.insert("build.sh".to_string(), script);
    Ok(Export { files, notes })
}

fn header(image: &str, more: &str) -> String {
    format!(
        "# {image}: written by `msctl export containerfiles` from msctl.toml.\n# Build it from the project's root: docker build -f <this file> -t {image} .\n{more}"
    )
}

/// The image's contract: it listens on `PORT` on every interface (the kit leaves loopback
/// only when `MSCTL_LISTEN` says so) and runs as a user that is no one's.
fn runtime_contract(port: u16) -> String {
    format!("ENV PORT={port} MSCTL_LISTEN=0.0.0.0:{port}\nEXPOSE {port}\nUSER {USER}:{USER}\n")
}

fn rust(image: &str, package: &str, bin: &str, port: u16) -> String {
    format!(
        "{}FROM {RUST_IMAGE} AS build\nWORKDIR /src\nCOPY . .\n# Caches keep the registry and target folder between builds; the binary is copied out of them.\nRUN --mount=type=cache,target=/usr/local/cargo/registry \\\n    --mount=type=cache,target=/src/target \\\n    cargo build --release --locked -p {package} --bin {bin} \\\n    && install -D target/release/{bin} /out/{bin} && mkdir -p /out/data\n\nFROM {RUST_RUNTIME}\nCOPY --from=build /out/{bin} /usr/local/bin/{bin}\n# Where a service keeps its data (SQLite), writable by the image's user; a volume on a cluster.\nCOPY --from=build --chown={USER}:{USER} /out/data /data\nENV MSCTL_DATA_DIR=/data\n{}ENTRYPOINT [\"/usr/local/bin/{bin}\"]\n",
        header(
            image,
            "# Two stages: the workspace compiled with its Cargo.lock, then the binary alone on a small base.\n"
        ),
        runtime_contract(port),
    )
}

fn exec_form(command: &[String]) -> Result<String, String> {
    serde_json::to_string(command).map_err(|e| e.to_string())
}

fn context_dir(dir: &str) -> String {
    if dir.is_empty() {
        ".".to_string()
    } else {
        dir.to_string()
    }
}

fn python(image: &str, dir: &str, command: &[String], port: u16) -> Result<String, String> {
    Ok(format!(
        "{}FROM {PYTHON_IMAGE} AS build\nWORKDIR /app\nCOPY {src}/ /app/\nRUN python -m venv /opt/venv \\\n    && if [ -f requirements.txt ]; then /opt/venv/bin/pip install --no-cache-dir -r requirements.txt; \\\n       else /opt/venv/bin/pip install --no-cache-dir .; fi\n\nFROM {PYTHON_IMAGE}\nCOPY --from=build /opt/venv /opt/venv\nCOPY --from=build /app /app\nWORKDIR /app\nENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1\n{}CMD {}\n",
        header(
            image,
            "# Two stages: its requirements installed into a venv, then the venv and its folder.\n"
        ),
        runtime_contract(port),
        exec_form(command)?,
        src = context_dir(dir),
    ))
}

fn node(image: &str, dir: &str, command: &[String], port: u16) -> Result<String, String> {
    Ok(format!(
        "{}FROM {NODE_IMAGE} AS build\nWORKDIR /app\nCOPY {src}/ /app/\nRUN if [ -f package-lock.json ]; then npm ci --omit=dev --no-audit --no-fund; \\\n    else npm install --omit=dev --no-audit --no-fund; fi\n\nFROM {NODE_IMAGE}\nCOPY --from=build /app /app\nWORKDIR /app\nENV NODE_ENV=production\n{}CMD {}\n",
        header(
            image,
            "# Two stages: its packages installed from package.json, then the folder with them.\n"
        ),
        runtime_contract(port),
        exec_form(command)?,
        src = context_dir(dir),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in [
            ("services/py/app.py", "print()\n"),
            ("services/py/requirements.txt", "fastapi\n"),
            ("services/js/server.js", "\n"),
            ("services/js/instrumentation.js", "\n"),
            ("services/js/package.json", "{}\n"),
            ("loose/run.py", "\n"),
        ] {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    fn config(root: &Path) -> Config {
        crate::config::parse(
            &root.join("msctl.toml"),
            r#"
[services.nats]
command = ["nats-server", "-p", "{port}"]
image = "nats:2.10"
[services.users]
command = ["target/debug/users"]
[services.admin]
command = ["target/debug/users", "--admin"]
[services.py]
command = ["services/py/.venv/bin/opentelemetry-instrument", "services/py/.venv/bin/python", "services/py/app.py"]
port = 9000
[services.js]
command = ["node", "--require", "./services/js/instrumentation.js", "services/js/server.js"]
"#,
        )
        .unwrap()
    }

    fn packages() -> Vec<Package> {
        vec![Package {
            name: "users-service".into(),
            dir: "/p/services/users".into(),
            bins: vec!["users".into()],
            path_deps: vec![],
        }]
    }

    #[test]
    fn every_kind_of_service_has_its_source() {
        let dir = project();
        let s = sources(&config(dir.path()), &packages()).unwrap();
        assert_eq!(s["nats"], Source::Given("nats:2.10".into()));
        let users = Source::Rust {
            package: "users-service".into(),
            bin: "users".into(),
        };
        assert_eq!(s["users"], users);
        assert_eq!(s["admin"], users);
        assert_eq!(
            s["py"],
            Source::Script {
                lang: Lang::Python,
                dir: "services/py".into(),
                command: vec![
                    "/opt/venv/bin/opentelemetry-instrument".into(),
                    "/opt/venv/bin/python".into(),
                    "/app/app.py".into()
                ],
            }
        );
        assert_eq!(
            s["js"],
            Source::Script {
                lang: Lang::Node,
                dir: "services/js".into(),
                command: vec![
                    "node".into(),
                    "--require".into(),
                    "/app/instrumentation.js".into(),
                    "/app/server.js".into()
                ],
            }
        );
    }

    #[test]
    fn a_program_without_its_dependencies_listed_is_refused_by_name() {
        let dir = project();
        let config = crate::config::parse(
            &dir.path().join("msctl.toml"),
            "[services.loose]\ncommand = [\"python3\", \"loose/run.py\"]\n",
        )
        .unwrap();
        let err = sources(&config, &[]).unwrap_err();
        assert!(err.contains("`loose`") && err.contains("image ="), "{err}");
    }

    #[test]
    fn one_containerfile_per_image_each_on_its_port_as_a_user_that_is_no_ones() {
        let dir = project();
        let config = config(dir.path());
        let s = sources(&config, &packages()).unwrap();
        let opts = Options {
            image_prefix: "reg/".into(),
            tag: "v2".into(),
            dir_in_project: Some("containers".into()),
        };
        let e = export(&config, &s, &opts).unwrap();
        let names: Vec<&str> = e.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "build.sh",
                "js.Containerfile",
                "js.Containerfile.dockerignore",
                "py.Containerfile",
                "py.Containerfile.dockerignore",
                "users.Containerfile",
                "users.Containerfile.dockerignore"
            ]
        );
        let users = &e.files["users.Containerfile"];
        assert!(users.contains("cargo build --release --locked -p users-service --bin users"));
        assert!(users.contains("ENTRYPOINT [\"/usr/local/bin/users\"]"));
        assert!(users.contains("ENV PORT=8080 MSCTL_LISTEN=0.0.0.0:8080"));
        assert!(users.contains("--chown=65532:65532 /out/data /data\nENV MSCTL_DATA_DIR=/data"));
        let py = &e.files["py.Containerfile"];
        assert!(py.contains("COPY services/py/ /app/") && py.contains("EXPOSE 9000"));
        assert!(py.contains(
            "CMD [\"/opt/venv/bin/opentelemetry-instrument\",\"/opt/venv/bin/python\",\"/app/app.py\"]"
        ));
        assert!(e.files.values().all(|f| !f.contains("USER root")));
        let script = &e.files["build.sh"];
        assert!(script.contains("cd \"$(dirname \"$0\")/..\""), "{script}");
        assert!(script.contains("build \"containers/users.Containerfile\" \"reg/users:v2\""));
        assert!(script.contains("\"reg/py:v2\""), "{script}");
        assert!(!script.contains("admin"), "one image for two services");
        assert_eq!(e.notes.len(), 1, "{:?}", e.notes);
        assert!(e.notes[0].starts_with("nats: runs the image nats:2.10"));
        let again = export(&config, &s, &opts).unwrap();
        assert_eq!(again.files, e.files);
    }
}
