//! msctl.toml: finding it, reading it, and checking it, with errors that name the file, line and
//! column. The checked result is what the rest of msctl uses; the raw schema, the checks, the
//! error snippets, the dependency graph and `${VAR}` expansion each have a module.

mod check;
mod error;
mod expand;
mod graph;
mod raw;

pub use check::{looks_like_instance, valid_service_name};
pub use error::{ConfigError, LoadError, did_you_mean};
pub use expand::expand_vars;
pub use raw::parse_duration;

use msctl_contract::control::{BadCount, MAX_REPLICAS};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const MANIFEST: &str = "msctl.toml";

/// A service's whole, checked description, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub command: Vec<String>,
    pub build: Option<Vec<String>>,
    pub health: Health,
    pub port: Port,
    pub replicas: u32,
    pub depends_on: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Files of `NAME=value` lines (`env_file`), relative to the project, read at each start;
    /// `env` wins over them.
    pub env_files: Vec<String>,
    pub restart: RestartPolicy,
    pub stop_timeout: Duration,
    pub start_timeout: Duration,
    pub health_interval: Duration,
    /// Failed liveness probes in a row that make an instance unhealthy.
    pub unhealthy_after: u32,
    /// Restarts in a row after which a crashing service is left down.
    pub max_restarts: u32,
    /// What watch mode watches, relative to the project: `None` for the default (a Cargo
    /// member's folder and its path dependencies).
    pub watch: Option<Vec<String>>,
    /// Globs of files watch mode ignores, on top of `target/`, `.msctl/`, `.git/` and editor
    /// swap files: a glob without `/` matches a file name, one with `/` a project-relative path.
    pub watch_ignore: Vec<String>,
    /// When its program is not installed, the rest of the system runs without it.
    pub optional: bool,
    /// Runs to its end (a migration, a seed): ready when it exits 0, not health-checked;
    /// what depends on it starts then.
    pub job: bool,
    /// Started by `up` only when one of these is asked for (`--profile`, `MSCTL_PROFILES`), or
    /// when named or depended on; none: always.
    pub profiles: Vec<String>,
    /// How to install its program, said when it is missing.
    pub install: Option<String>,
    /// The container image it runs on a cluster, for a service that is not a binary of the
    /// workspace (`nats:2.10`).
    pub image: Option<String>,
    /// What `msctl export kubernetes` needs to know beyond what runs here.
    pub kubernetes: Kubernetes,
}

/// `[services.X.kubernetes]`: resources and storage on a cluster.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    /// The size of the volume at `MSCTL_DATA_DIR` (`"1Gi"`): the service keeps data, and runs
    /// as a StatefulSet.
    pub volume: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

/// What msctl fills in in a command: `{port}`, `{addr}`, `{data_dir}`, `{instance}`.
pub const PLACEHOLDERS: [&str; 4] = ["port", "addr", "data_dir", "instance"];

/// The `{name}` placeholders in `arg` that msctl does not know: a lowercase word in braces.
/// Anything else in braces (JSON, shell) is left alone.
pub fn unknown_placeholders(arg: &str) -> Vec<&str> {
    let mut unknown = Vec::new();
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let word = &after[..close];
                if !word.is_empty()
                    && word.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    && !PLACEHOLDERS.contains(&word)
                {
                    unknown.push(word);
                }
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    unknown
}

/// `arg` with msctl's placeholders filled in.
pub fn fill_placeholders(
    arg: &str,
    port: u16,
    addr: &str,
    data_dir: &str,
    instance: &str,
) -> String {
    arg.replace("{port}", &port.to_string())
        .replace("{addr}", addr)
        .replace("{data_dir}", data_dir)
        .replace("{instance}", instance)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// GET this path; healthy on 2xx.
    Http(String),
    /// A TCP connect that succeeds.
    Tcp,
    /// Healthy once started.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Auto,
    Fixed(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    OnFailure,
    Always,
}

/// A checked msctl.toml.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub root: PathBuf,
    pub services: BTreeMap<String, Service>,
}

impl Config {
    /// The services `up` starts with no names given, when `active` profiles are asked for:
    /// those with no profile and those with one of them. A profile no service has is an error
    /// that lists the ones there are.
    pub fn in_profiles(&self, active: &[String]) -> Result<Vec<String>, String> {
        let known: std::collections::BTreeSet<&String> =
            self.services.values().flat_map(|s| &s.profiles).collect();
        if let Some(unknown) = active.iter().find(|p| !known.contains(p)) {
            return Err(if known.is_empty() {
                format!("--profile {unknown}: no service in msctl.toml has a profile")
            } else {
                format!(
                    "--profile {unknown}: no service has that profile; profiles: {}",
                    known.into_iter().cloned().collect::<Vec<_>>().join(", ")
                )
            });
        }
        Ok(self
            .services
            .values()
            .filter(|s| s.profiles.is_empty() || s.profiles.iter().any(|p| active.contains(p)))
            .map(|s| s.name.clone())
            .collect())
    }

    /// Overrides `replicas` as `up --scale SERVICE=N` asks; a count below one, more than one on
    /// a fixed port, or an unknown service is refused with a sentence saying so.
    pub fn scale(
        &mut self,
        targets: &[(String, msctl_contract::control::Replicas)],
    ) -> Result<(), String> {
        for (name, replicas) in targets {
            let Some(service) = self.services.get_mut(name) else {
                return Err(format!(
                    "--scale {name}=…: no service `{name}` in msctl.toml"
                ));
            };
            let n = match replicas.resolve(service.replicas) {
                Ok(n) => n,
                Err(BadCount::TooFew) => {
                    return Err(format!(
                        "--scale {name}: at least one instance; to leave it out, name the services to start"
                    ));
                }
                Err(BadCount::TooMany(n)) => {
                    return Err(format!(
                        "--scale {name}={n}: msctl runs at most {MAX_REPLICAS} instances of one service"
                    ));
                }
            };
            if let Port::Fixed(port) = service.port
                && n > 1
            {
                return Err(format!(
                    "--scale {name}={n}: `{name}` listens on the fixed port {port}, so it can run only one instance"
                ));
            }
            service.replicas = n;
        }
        Ok(())
    }
}

/// Finds msctl.toml in `start` or the nearest parent, as cargo finds Cargo.toml. Anything of that
/// name counts, so that one msctl cannot read (a folder, a broken link) is named as such rather
/// than passed over for one further up or reported missing.
pub fn find(start: &Path) -> Result<PathBuf, LoadError> {
    start
        .ancestors()
        .map(|dir| dir.join(MANIFEST))
        .find(|candidate| candidate.symlink_metadata().is_ok())
        .ok_or_else(|| LoadError::NotFound(start.to_path_buf()))
}

/// Reads and checks the manifest at `path`.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    load_with(path, false)
}

/// The same, for commands that add to it: a manifest with no services yet (as `msctl init`
/// writes in an empty folder) is fine.
pub fn load_to_edit(path: &Path) -> Result<Config, LoadError> {
    load_with(path, true)
}

fn load_with(path: &Path, allow_empty: bool) -> Result<Config, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        return Err(io(std::io::Error::other(
            "it is a folder, not a file; msctl.toml is the file that lists the services",
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let byte = e.as_bytes()[at];
            let text = String::from_utf8_lossy(e.as_bytes());
            // The lossy text has one U+FFFD (3 bytes) per bad sequence; the first starts at `at`.
            return Err(ConfigError::at(
                &path,
                &text,
                at..at + 3,
                format!("byte 0x{byte:02X} is not UTF-8 text"),
                Some("TOML is UTF-8: save msctl.toml as UTF-8 in your editor".into()),
            )
            .into());
        }
    };
    Ok(parse_with(&path, &text, allow_empty)?)
}

/// Checks `text` as the manifest at `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_with(path, text, false)
}

/// Checks `text` as the manifest at `path`, which may have no services yet.
pub fn parse_to_edit(path: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_with(path, text, true)
}

fn parse_with(path: &Path, text: &str, allow_empty: bool) -> Result<Config, ConfigError> {
    let raw: raw::RawManifest =
        toml::from_str(text).map_err(|e| error::from_toml_error(path, text, &e))?;
    check::check(path, text, raw, allow_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("/p/msctl.toml"), text)
    }

    #[test]
    fn defaults_apply_and_services_override_them() {
        let c = parse_str(
            r#"
[defaults]
restart = "always"
stop_timeout = "2s"
env = { A = "1", B = "1" }

[services.a]
command = ["a"]
env = { B = "2" }
stop_timeout = 1

[services.b]
command = ["b", "--x"]
port = 4000
health = "tcp"
depends_on = ["a"]
"#,
        )
        .unwrap();
        let a = &c.services["a"];
        assert_eq!(a.restart, RestartPolicy::Always);
        assert_eq!(a.stop_timeout, Duration::from_secs(1));
        assert_eq!(a.env["A"], "1");
        assert_eq!(a.env["B"], "2");
        assert_eq!(a.health, Health::Http("/health".into()));
        let b = &c.services["b"];
        assert_eq!(b.port, Port::Fixed(4000));
        assert_eq!(b.health, Health::Tcp);
        assert_eq!(b.stop_timeout, Duration::from_secs(2));
        let order: Vec<&str> = c
            .start_order(&["b".into()])
            .unwrap()
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(order, vec!["a", "b"]);
        assert!(c.start_order(&["c".into()]).is_err());
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let e =
            parse_str("[services.a]\ncommand = [\"a\"]\nrestart = \"sometimes\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 11));
        let e = parse_str("[services.a]\n  comand = [\"a\"]\n").unwrap_err();
        assert_eq!(
            (e.line, e.column, e.message.as_str()),
            (2, 3, "unknown key `comand`")
        );
        assert_eq!(e.hint.as_deref(), Some("did you mean `command`?"));
        assert!(
            e.snippet.contains("2 |   comand = [\"a\"]\n  |   ^^^^^^"),
            "{}",
            e.snippet
        );
    }

    #[test]
    fn durations_and_variables() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m 30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration("soon"), None);
        let env = |k: &str| (k == "T").then(|| "/t".to_string());
        assert_eq!(expand_vars("${T}/debug/x", env).unwrap(), "/t/debug/x");
        assert_eq!(
            expand_vars("${U:-target}/debug/x", env).unwrap(),
            "target/debug/x"
        );
        assert!(expand_vars("${U}/x", env).unwrap_err().contains("${U}"));
        // `$$` is a `$` kept for the program (a shell) to expand; a lone `$` stays.
        assert_eq!(
            expand_vars("echo $${T} $T $$ a$ ${T}", env).unwrap(),
            "echo ${T} $T $ a$ /t"
        );
    }

    #[test]
    fn watch_settings_are_checked() {
        let c = parse_str(
            "[defaults]\nwatch_ignore = [\"*.md\"]\n[services.a]\ncommand = [\"a\"]\nwatch = [\"src/\", \"package.json\"]\nwatch_ignore = [\"fixtures/**\"]\n[services.b]\ncommand = [\"b\"]\n",
        )
        .unwrap();
        let a = &c.services["a"];
        assert_eq!(
            a.watch.as_deref(),
            Some(&["src".to_string(), "package.json".to_string()][..])
        );
        assert_eq!(a.watch_ignore, ["*.md", "fixtures/**"]);
        assert_eq!(c.services["b"].watch, None);
        assert_eq!(c.services["b"].watch_ignore, ["*.md"]);
        let e =
            parse_str("[services.a]\ncommand = [\"a\"]\nwatch = [\"../elsewhere\"]\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(
            e.message
                .contains("not a folder or file inside the project"),
            "{}",
            e.message
        );
        let e =
            parse_str("[services.a]\ncommand = [\"a\"]\nwatch_ignore = [\"a[\"]\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("not a glob"), "{}", e.message);
    }

    #[test]
    fn placeholders_optional_programs_and_no_build() {
        let c = parse_str(
            "[defaults]\nbuild = [\"make\"]\n[services.nats]\ncommand = [\"nats-server\", \"-p\", \"{port}\", \"-sd\", \"{data_dir}\", \"{\\\"json\\\": 1}\"]\nbuild = []\noptional = true\ninstall = \"apt-get install nats-server\"\n[services.app]\ncommand = [\"app\"]\n",
        )
        .unwrap();
        let nats = &c.services["nats"];
        assert_eq!(nats.build, None, "`build = []` builds nothing");
        assert!(nats.optional);
        assert_eq!(nats.install.as_deref(), Some("apt-get install nats-server"));
        assert_eq!(
            c.services["app"].build.as_deref(),
            Some(&["make".to_string()][..])
        );
        assert!(!c.services["app"].optional);
        assert_eq!(
            fill_placeholders(
                "{addr}/{instance}/{port}",
                4222,
                "127.0.0.1:4222",
                "/d",
                "nats-1"
            ),
            "127.0.0.1:4222/nats-1/4222"
        );
        let e = parse_str("[services.a]\ncommand = [\"x\", \"--port={prot}\"]\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.message.contains("unknown placeholder `{prot}`"),
            "{}",
            e.message
        );
        assert!(e.hint.unwrap().contains("{port}"));
        let e = parse_str("[defaults]\nbuild = []\n[services.a]\ncommand = [\"x\"]\n").unwrap_err();
        assert!(
            e.message.contains("build command of service `a` is empty"),
            "{}",
            e.message
        );
    }

    #[test]
    fn names_are_plain() {
        for ok in ["users", "a", "user-db2"] {
            assert!(valid_service_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Users",
            "1x",
            "-x",
            "x-",
            "a b",
            "a/b",
            "../x",
            "usérs",
            "x".repeat(41).as_str(),
        ] {
            assert!(!valid_service_name(bad), "{bad}");
        }
    }
}
