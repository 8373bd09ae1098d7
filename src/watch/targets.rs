//! What watch mode watches for each service, and which services a changed file affects.
//!
//! A Cargo workspace member is found from its service's command (the binary it runs) and
//! watched as its own folder plus the path dependencies it builds with, so that a change in a
//! shared crate rebuilds every service that uses it. `watch = [...]` in msctl.toml replaces that.

use crate::config::{Config, Service, expand_vars};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files at the project's root whose change concerns every Cargo service.
const CARGO_ROOT_FILES: [&str; 2] = ["Cargo.toml", "Cargo.lock"];

/// Where one service's sources are, and how it is rebuilt.
#[derive(Debug, Clone)]
pub struct Target {
    /// Absolute folders (watched with everything under them) and files.
    pub paths: Vec<PathBuf>,
    /// The Cargo package that builds it: rebuilt with `cargo build -p PACKAGE`.
    pub package: Option<String>,
    ignore: GlobSet,
}

/// What is watched, for the whole system.
#[derive(Debug, Clone)]
pub struct Plan {
    pub root: PathBuf,
    pub manifest: PathBuf,
    pub services: BTreeMap<String, Target>,
    /// Services with nothing to watch, and why, to say once.
    pub unwatched: Vec<(String, String)>,
}

/// A Cargo package as `cargo metadata --no-deps` describes it: enough to map binaries to
/// packages and follow path dependencies.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    pub name: String,
    pub dir: PathBuf,
    pub bins: Vec<String>,
    /// Folders of its normal and build path dependencies (dev-dependencies do not go into the
    /// binary, so they do not make it stale).
    pub path_deps: Vec<PathBuf>,
}

/// The workspace around `root`, read with `cargo metadata`; empty when there is none (a
/// project of scripts, or cargo missing).
pub fn workspace(root: &Path) -> Vec<Package> {
    let mut cmd = cargo_metadata::MetadataCommand::new();
    cmd.current_dir(root).no_deps();
    if let Ok(cargo) = std::env::var("CARGO") {
        cmd.cargo_path(cargo);
    }
    let Ok(meta) = cmd.exec() else {
        return Vec::new();
    };
    meta.workspace_packages()
        .into_iter()
        .map(|p| Package {
            name: p.name.to_string(),
            dir: p
                .manifest_path
                .parent()
                .map(|d| d.as_std_path().to_path_buf())
                .unwrap_or_default(),
            bins: p
                .targets
                .iter()
                .filter(|t| t.is_bin())
                .map(|t| t.name.clone())
                .collect(),
            path_deps: p
                .dependencies
                .iter()
                .filter(|d| d.kind != cargo_metadata::DependencyKind::Development)
                .filter_map(|d| d.path.as_ref().map(|p| p.as_std_path().to_path_buf()))
                .collect(),
        })
        .collect()
}

/// Always ignored, whatever msctl.toml says: build output, msctl's own state, git, and the
/// files editors write beside the one being saved.
pub fn always_ignored(relative: &Path) -> bool {
    let skipped_dir = relative.components().any(|c| {
        matches!(
            c.as_os_str().to_str(),
            Some("target" | ".msctl" | ".git" | "node_modules" | "__pycache__" | ".venv")
        )
    });
    let name = relative
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    skipped_dir
        || name.ends_with('~')
        || name.starts_with(".#")
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".swo")
        || name.ends_with(".tmp")
        // vim's probe that a folder is writable
        || name == "4913"
        || (name.starts_with('#') && name.ends_with('#'))
}

impl Plan {
    /// Works out what to watch for each service of `config`, given the workspace's packages.
    pub fn new(config: &Config, packages: &[Package]) -> Self {
        let root = config.root.clone();
        let mut services = BTreeMap::new();
        let mut unwatched = Vec::new();
        for service in config.services.values() {
            let package = package_of(service, packages);
            let paths: Vec<PathBuf> = match (&service.watch, package) {
                (Some(listed), _) => listed.iter().map(|p| root.join(p)).collect(),
                (None, Some(package)) => {
                    let mut dirs = BTreeSet::new();
                    closure(package, packages, &mut dirs);
                    let mut paths: Vec<PathBuf> = dirs.into_iter().collect();
                    paths.extend(CARGO_ROOT_FILES.iter().map(|f| root.join(f)));
                    paths
                }
                (None, None) => {
                    unwatched.push((
                        service.name.clone(),
                        "it is not built by a Cargo package of this workspace; list its sources in `watch = [...]` in msctl.toml".to_string(),
                    ));
                    continue;
                }
            };
            // Its `env_file`s are read at each start: a change is applied by replacing it.
            let mut paths = paths;
            paths.extend(service.env_files.iter().map(|f| root.join(f)));
            let mut ignore = GlobSetBuilder::new();
            for pattern in &service.watch_ignore {
                // Checked when msctl.toml was read.
                if let Ok(glob) = Glob::new(pattern) {
                    ignore.add(glob);
                }
            }
            services.insert(
                service.name.clone(),
                Target {
                    paths,
                    package: package.map(|p| p.name.clone()),
                    ignore: ignore.build().unwrap_or_else(|_| GlobSet::empty()),
                },
            );
        }
        Self {
            root,
            manifest: config.path.clone(),
            services,
            unwatched,
        }
    }

    /// The services whose sources include `path`.
    pub fn affected(&self, path: &Path) -> Vec<&str> {
        let Ok(relative) = path.strip_prefix(&self.root) else {
            return Vec::new();
        };
        if always_ignored(relative) {
            return Vec::new();
        }
        let name = relative.file_name().map(Path::new);
        self.services
            .iter()
            .filter(|(_, t)| t.paths.iter().any(|p| path.starts_with(p)))
            .filter(|(_, t)| {
                !t.ignore.is_match(relative) && !name.is_some_and(|n| t.ignore.is_match(n))
            })
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// The Cargo package that builds `service`, when it has one.
    pub fn package_of(&self, service: &str) -> Option<&str> {
        self.services
            .get(service)
            .and_then(|t| t.package.as_deref())
    }

    /// Whether `path` is msctl.toml itself.
    pub fn is_manifest(&self, path: &Path) -> bool {
        path == self.manifest
    }

    /// What to register with the file watcher: folders watched with what is under them, and
    /// folders watched alone (holding a watched file, which editors replace by renaming, so the
    /// file itself cannot be watched). Folders inside another watched one are left out.
    pub fn roots(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut recursive: BTreeSet<PathBuf> = BTreeSet::new();
        let mut shallow: BTreeSet<PathBuf> = BTreeSet::new();
        shallow.insert(self.manifest.parent().unwrap_or(&self.root).to_path_buf());
        for target in self.services.values() {
            for p in &target.paths {
                if p.is_dir() {
                    recursive.insert(p.clone());
                } else if let Some(parent) = p.parent() {
                    shallow.insert(parent.to_path_buf());
                }
            }
        }
        let recursive: Vec<PathBuf> = recursive
            .iter()
            .filter(|p| !recursive.iter().any(|o| o != *p && p.starts_with(o)))
            .cloned()
            .collect();
        let shallow = shallow
            .into_iter()
            .filter(|p| !recursive.iter().any(|o| p.starts_with(o)))
            .collect();
        (recursive, shallow)
    }
}

/// The workspace package that builds `service`: the one with a binary of the same name as the
/// program its command runs, or the one `cargo run -p NAME` / `--bin NAME` names.
fn package_of<'a>(service: &Service, packages: &'a [Package]) -> Option<&'a Package> {
    let command: Vec<String> = service
        .command
        .iter()
        .map(|a| expand_vars(a, |k| std::env::var(k).ok()).unwrap_or_else(|_| a.clone()))
        .collect();
    let program = Path::new(command.first()?).file_name()?.to_str()?;
    if program == "cargo" && command.get(1).is_some_and(|c| c == "run") {
        let named = |flag: &str| {
            command
                .windows(2)
                .find(|w| w[0] == flag)
                .map(|w| w[1].clone())
        };
        let package = named("-p").or_else(|| named("--package"));
        let bin = named("--bin");
        return packages.iter().find(|p| {
            package.as_deref() == Some(p.name.as_str())
                || bin.as_ref().is_some_and(|b| p.bins.contains(b))
        });
    }
    packages
        .iter()
        .find(|p| p.bins.iter().any(|b| b == program))
}

/// `package`'s folder and those of its path dependencies, followed through the workspace.
fn closure(package: &Package, packages: &[Package], dirs: &mut BTreeSet<PathBuf>) {
    if !dirs.insert(package.dir.clone()) {
        return;
    }
    for dep in &package.path_deps {
        match packages.iter().find(|p| &p.dir == dep) {
            Some(p) => closure(p, packages, dirs),
            None => {
                dirs.insert(dep.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, dir: &str, bins: &[&str], deps: &[&str]) -> Package {
        Package {
            name: name.into(),
            dir: PathBuf::from(dir),
            bins: bins.iter().map(|b| b.to_string()).collect(),
            path_deps: deps.iter().map(PathBuf::from).collect(),
        }
    }

    fn sample() -> (Config, Vec<Package>) {
        let config = crate::config::parse(
            Path::new("/p/msctl.toml"),
            r#"
[services.users]
command = ["${CARGO_TARGET_DIR:-target}/debug/users"]
watch_ignore = ["*.md"]
[services.gateway]
command = ["target/debug/gateway"]
[services.script]
command = ["python3", "app.py"]
[services.listed]
command = ["node", "server.js"]
watch = ["web", "package.json"]
"#,
        )
        .unwrap();
        let packages = vec![
            package("contract", "/p/contract", &[], &[]),
            package("kit", "/p/services/kit", &[], &["/p/contract"]),
            package(
                "users",
                "/p/services/users",
                &["users"],
                &["/p/services/kit"],
            ),
            package(
                "gateway",
                "/p/services/gateway",
                &["gateway"],
                &["/p/services/kit"],
            ),
        ];
        (config, packages)
    }

    #[test]
    fn a_cargo_service_watches_its_crate_and_path_dependencies() {
        let (config, packages) = sample();
        let plan = Plan::new(&config, &packages);
        let users = &plan.services["users"];
        assert_eq!(users.package.as_deref(), Some("users"));
        for dir in ["/p/services/users", "/p/services/kit", "/p/contract"] {
            assert!(users.paths.contains(&PathBuf::from(dir)), "{dir}");
        }
        assert!(!users.paths.contains(&PathBuf::from("/p/services/gateway")));
        let kit_change = plan.affected(Path::new("/p/services/kit/src/client.rs"));
        assert_eq!(kit_change, ["gateway", "users"]);
        assert_eq!(
            plan.affected(Path::new("/p/services/users/src/lib.rs")),
            ["users"]
        );
        assert_eq!(
            plan.affected(Path::new("/p/Cargo.lock")),
            ["gateway", "users"]
        );
        assert_eq!(plan.unwatched.len(), 1);
        assert_eq!(plan.unwatched[0].0, "script");
    }

    #[test]
    fn an_env_file_is_watched_with_its_service() {
        let config = crate::config::parse(
            Path::new("/p/msctl.toml"),
            "[services.web]\ncommand = [\"node\", \"web/server.js\"]\nwatch = [\"web\"]\nenv_file = [\"config/web.env\"]\n",
        )
        .unwrap();
        let plan = Plan::new(&config, &[]);
        assert_eq!(plan.affected(Path::new("/p/config/web.env")), ["web"]);
        assert!(plan.affected(Path::new("/p/config/other.env")).is_empty());
        let (_, shallow) = plan.roots();
        assert!(shallow.contains(&PathBuf::from("/p/config")), "{shallow:?}");
    }

    #[test]
    fn ignored_files_affect_nothing() {
        let (config, packages) = sample();
        let plan = Plan::new(&config, &packages);
        for path in [
            "/p/services/users/target/debug/users",
            "/p/.msctl/registry.json",
            "/p/services/users/.git/index",
            "/p/services/users/src/.lib.rs.swp",
            "/p/services/users/src/lib.rs~",
            "/p/services/users/src/4913",
            "/p/services/users/README.md",
            "/p/elsewhere/x.rs",
            "/q/services/users/src/lib.rs",
        ] {
            assert!(plan.affected(Path::new(path)).is_empty(), "{path}");
        }
        // `*.md` is ignored for users only.
        assert_eq!(
            plan.affected(Path::new("/p/services/kit/NOTES.md")),
            ["gateway"]
        );
    }

    #[test]
    fn listed_paths_replace_the_default() {
        let (config, packages) = sample();
        let plan = Plan::new(&config, &packages);
        let listed = &plan.services["listed"];
        assert_eq!(listed.package, None);
        assert_eq!(plan.affected(Path::new("/p/web/index.js")), ["listed"]);
        assert_eq!(plan.affected(Path::new("/p/package.json")), ["listed"]);
        assert!(plan.affected(Path::new("/p/web2/x.js")).is_empty());
    }

    #[test]
    fn roots_leave_out_nested_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["a/b", "c"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let plan = Plan {
            root: root.to_path_buf(),
            manifest: root.join("msctl.toml"),
            services: [(
                "s".to_string(),
                Target {
                    paths: vec![root.join("a"), root.join("a/b"), root.join("c/file.txt")],
                    package: None,
                    ignore: GlobSet::empty(),
                },
            )]
            .into(),
            unwatched: vec![],
        };
        let (recursive, shallow) = plan.roots();
        assert_eq!(recursive, [root.join("a")]);
        assert_eq!(shallow, [root.to_path_buf(), root.join("c")]);
    }

    #[test]
    fn cargo_run_commands_name_their_package() {
        let config = crate::config::parse(
            Path::new("/p/msctl.toml"),
            "[services.u]\ncommand = [\"cargo\", \"run\", \"-p\", \"users\"]\n",
        )
        .unwrap();
        let (_, packages) = sample();
        let plan = Plan::new(&config, &packages);
        assert_eq!(plan.services["u"].package.as_deref(), Some("users"));
    }

    #[test]
    fn this_workspace_is_read_with_cargo_metadata() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let packages = workspace(root);
        let users = packages.iter().find(|p| p.name == "users").unwrap();
        assert_eq!(users.bins, ["users"]);
        assert!(users.path_deps.contains(&root.join("services/kit")));
    }
}
