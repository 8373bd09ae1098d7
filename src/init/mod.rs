//! `msctl init`: an msctl.toml for a project that has none, from what is in its folder (Cargo
//! binaries, npm start scripts, Python entry points, a Procfile) or imported from a Procfile or a
//! compose file. Every guess is written as a comment beside what it decided, and everything that
//! could not be mapped is reported, never dropped.

pub mod compose;
pub mod detect;
pub mod procfile;

use std::collections::{BTreeMap, BTreeSet};

/// One service as msctl.toml will have it, with the comments that explain its guesses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub name: String,
    /// Lines written above the table, without the `# `.
    pub notes: Vec<String>,
    pub command: Vec<String>,
    pub build: Option<Vec<String>>,
    /// `/health`, `tcp` or `none`.
    pub health: String,
    pub depends_on: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// `env_file`: files of `NAME=value` lines, relative to the project.
    pub env_files: Vec<String>,
    /// Runs to its end; what depends on it waits for that (`job = true`).
    pub job: bool,
    /// `profiles`: started only when one is asked for.
    pub profiles: Vec<String>,
    pub replicas: u32,
    pub restart: Option<String>,
    pub health_interval: Option<String>,
    pub unhealthy_after: Option<u32>,
    pub start_timeout: Option<String>,
}

impl Draft {
    pub fn new(name: &str, command: Vec<String>) -> Self {
        Self {
            name: name.to_string(),
            notes: Vec::new(),
            command,
            build: None,
            health: "tcp".into(),
            depends_on: Vec::new(),
            env: BTreeMap::new(),
            env_files: Vec::new(),
            job: false,
            profiles: Vec::new(),
            replicas: 1,
            restart: None,
            health_interval: None,
            unhealthy_after: None,
            start_timeout: None,
        }
    }

    /// `replicas`, as `from` (`deploy.replicas: 500`) asked, within what msctl runs.
    pub fn set_replicas(&mut self, n: u64, from: &str) {
        use msctl_contract::control::MAX_REPLICAS;
        if n > u64::from(MAX_REPLICAS) {
            self.notes.push(format!(
                "{from}: msctl runs at most {MAX_REPLICAS} instances of one service, so {MAX_REPLICAS} here"
            ));
        }
        self.replicas = n.clamp(1, u64::from(MAX_REPLICAS)) as u32;
    }
}

/// A process or service that could not be made an msctl service, why, and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub why: String,
    pub suggestion: String,
    /// A service table to start from, written commented out.
    pub table: Option<String>,
}

/// A build every service shares, and why, for `[defaults]`.
pub type SharedBuild = (Vec<String>, String);

/// What init found: the services, a build shared by all, and what it could not map.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Where it came from, for the file's first line: `the files in this folder`, `Procfile`.
    pub source: String,
    pub build: Option<SharedBuild>,
    pub services: Vec<Draft>,
    pub skipped: Vec<Skipped>,
    /// Keys and values read but not mapped, by where they were: reported and written down.
    pub unmapped: Vec<String>,
}

/// A name msctl accepts, from a package, process type or compose service name: lowercase,
/// dashes for what is not a letter or digit, starting with a letter.
pub fn service_name(raw: &str) -> Option<String> {
    let raw = raw.rsplit('/').next().unwrap_or(raw);
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let name = name.trim_matches('-').to_string();
    crate::config::valid_service_name(&name).then_some(name)
}

/// Makes every name unique and unlike any other's instance ids: a second `web` becomes `web2`,
/// and so does a `web-2` beside a `web` (which would be the id of web's second instance).
/// Dependencies on a renamed service follow it.
fn unique_names(services: &mut [Draft]) {
    use crate::config::looks_like_instance;
    let originals: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    for s in services.iter_mut() {
        let clashes = |name: &str, taken: &BTreeSet<String>| {
            taken.contains(name)
                || originals.iter().any(|o| looks_like_instance(name, o))
                || taken.iter().any(|t| looks_like_instance(t, name))
        };
        if !clashes(&s.name, &taken) {
            taken.insert(s.name.clone());
            continue;
        }
        let duplicate = originals.iter().filter(|o| **o == s.name).count() > 1;
        let base = match s.name.rsplit_once('-') {
            Some((stem, n)) if !duplicate && n.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{stem}{n}")
            }
            _ => s.name.clone(),
        };
        // Room for the number within the 40 characters a name may have.
        let stem: String = base.chars().take(34).collect();
        let name = std::iter::once(base.clone())
            .filter(|_| base != s.name)
            .chain((2..).map(|n| format!("{stem}{n}")))
            .find(|c| crate::config::valid_service_name(c) && !clashes(c, &taken))
            .expect("some number makes a name free");
        s.notes.push(if duplicate {
            format!("renamed from `{}`: another service has that name", s.name)
        } else {
            format!(
                "renamed from `{}`: that is the id msctl gives an instance of another service",
                s.name
            )
        });
        if !duplicate {
            renamed.insert(s.name.clone(), name.clone());
        }
        taken.insert(name.clone());
        s.name = name;
    }
    for s in services.iter_mut() {
        for dep in &mut s.depends_on {
            if let Some(new) = renamed.get(dep) {
                *dep = new.clone();
            }
        }
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", items.join(", "))
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        toml_string(k)
    }
}

fn comment_lines(out: &mut String, lines: &[String]) {
    for line in lines {
        for part in line.lines() {
            out.push_str(&format!("# {part}\n"));
        }
    }
}

/// The msctl.toml text for what was found.
pub fn render(found: &Found) -> String {
    let mut found = found.clone();
    unique_names(&mut found.services);
    let mut out = format!(
        "# msctl.toml, written by `msctl init` from {}.\n# Lines starting `# check:` are guesses to look at. `msctl up` runs it all.\n",
        found.source
    );
    if found.services.is_empty() {
        out.push_str(
            "#\n# `msctl scaffold NAME` adds a service (`--template python` or `node` for other\n# languages); or write a [services.NAME] table.\n",
        );
    }
    if let Some((build, why)) = &found.build {
        out.push_str(&format!(
            "\n[defaults]\n# {why}\nbuild = {}\n",
            toml_list(build)
        ));
    }
    if found.services.is_empty() {
        out.push_str("\n[services]\n");
    }
    for s in &found.services {
        out.push('\n');
        comment_lines(&mut out, &s.notes);
        out.push_str(&format!("[services.{}]\n", s.name));
        out.push_str(&format!("command = {}\n", toml_list(&s.command)));
        if let Some(build) = &s.build {
            out.push_str(&format!("build = {}\n", toml_list(build)));
        }
        out.push_str("port = \"auto\"\n");
        if s.job {
            // Ready when it exits 0: a job has no health to check.
            out.push_str("job = true\n");
        } else {
            out.push_str(&format!("health = {}\n", toml_string(&s.health)));
            if let Some(i) = &s.health_interval {
                out.push_str(&format!("health_interval = {}\n", toml_string(i)));
            }
            if let Some(n) = s.unhealthy_after {
                out.push_str(&format!("unhealthy_after = {n}\n"));
            }
        }
        if let Some(t) = &s.start_timeout {
            out.push_str(&format!("start_timeout = {}\n", toml_string(t)));
        }
        if s.replicas != 1 {
            out.push_str(&format!("replicas = {}\n", s.replicas));
        }
        if !s.depends_on.is_empty() {
            out.push_str(&format!("depends_on = {}\n", toml_list(&s.depends_on)));
        }
        if !s.profiles.is_empty() {
            out.push_str(&format!("profiles = {}\n", toml_list(&s.profiles)));
        }
        if let Some(r) = &s.restart {
            out.push_str(&format!("restart = {}\n", toml_string(r)));
        }
        if !s.env_files.is_empty() {
            out.push_str(&format!("env_file = {}\n", toml_list(&s.env_files)));
        }
        if !s.env.is_empty() {
            let pairs: Vec<String> = s
                .env
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_key(k), toml_string(v)))
                .collect();
            out.push_str(&format!("env = {{ {} }}\n", pairs.join(", ")));
        }
    }
    if !found.skipped.is_empty() {
        out.push_str("\n# Not imported:\n");
        for s in &found.skipped {
            out.push_str(&format!("#\n# {}: {}\n", s.name, s.why));
            out.push_str(&format!("# {}\n", s.suggestion));
            if let Some(table) = &s.table {
                out.push_str("#\n");
                for line in table.lines() {
                    out.push_str(&format!("# {line}\n"));
                }
            }
        }
    }
    if !found.unmapped.is_empty() {
        out.push_str("\n# Read but not mapped (msctl has no equivalent, or it needs a look):\n");
        for u in &found.unmapped {
            out.push_str(&format!("# - {u}\n"));
        }
    }
    out
}

/// What to say on stderr after writing: one line per service, skipped service and unmapped key.
pub fn report(found: &Found) -> Vec<String> {
    let mut found = found.clone();
    unique_names(&mut found.services);
    let mut lines = Vec::new();
    for s in &found.services {
        lines.push(format!(
            "service {}: {} (health: {})",
            s.name,
            s.command.join(" "),
            s.health
        ));
    }
    for s in &found.skipped {
        lines.push(format!(
            "not imported: {}: {}; {}",
            s.name, s.why, s.suggestion
        ));
    }
    for u in &found.unmapped {
        lines.push(format!("not mapped: {u}"));
    }
    lines
}

/// The service tables suggested for infrastructure a container image provided: the same
/// program from Debian's packages, run as a process.
pub fn infrastructure(image: &str, name: &str) -> Option<(String, String)> {
    let base = image
        .rsplit('/')
        .next()
        .unwrap_or(image)
        .split([':', '@'])
        .next()
        .unwrap_or_default();
    let (package, table) = match base {
        "postgres" | "postgresql" => (
            "postgresql",
            format!(
                "[services.{name}]\n# initdb on the first start, then the server on loopback; data in .msctl/data/{name}\ncommand = [\"sh\", \"-c\", \"[ -f {{data_dir}}/PG_VERSION ] || /usr/lib/postgresql/*/bin/initdb -D {{data_dir}} -U postgres --auth=trust >/dev/null && exec /usr/lib/postgresql/*/bin/postgres -D {{data_dir}} -p {{port}} -k /tmp -c listen_addresses=127.0.0.1\"]\nbuild = []\nhealth = \"tcp\"\ninstall = \"apt-get install postgresql\"\nimage = {}\n",
                toml_string(image)
            ),
        ),
        "redis" | "valkey" => (
            "redis-server",
            format!(
                "[services.{name}]\ncommand = [\"redis-server\", \"--bind\", \"127.0.0.1\", \"--port\", \"{{port}}\", \"--dir\", \"{{data_dir}}\"]\nbuild = []\nhealth = \"tcp\"\ninstall = \"apt-get install redis-server\"\nimage = {}\n",
                toml_string(image)
            ),
        ),
        "nats" => (
            "nats-server",
            format!(
                "[services.{name}]\ncommand = [\"nats-server\", \"-a\", \"127.0.0.1\", \"-p\", \"{{port}}\", \"-js\", \"-sd\", \"{{data_dir}}\"]\nbuild = []\nhealth = \"tcp\"\ninstall = \"apt-get install nats-server\"\nimage = {}\n",
                toml_string(image)
            ),
        ),
        _ => return None,
    };
    Some((package.to_string(), table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_ones_msctl_accepts() {
        assert_eq!(service_name("@acme/Web_App").as_deref(), Some("web-app"));
        assert_eq!(service_name("worker").as_deref(), Some("worker"));
        assert_eq!(service_name("api__v2").as_deref(), Some("api-v2"));
        assert_eq!(service_name("2fast"), None);
        assert_eq!(service_name("___"), None);
    }

    #[test]
    fn names_that_are_instance_ids_of_others_are_renamed_and_followed() {
        // A Procfile or compose file may have `web` and `web-2`; msctl calls web's second
        // instance `web-2`.
        let mut api = Draft::new("api", vec!["a".into()]);
        api.depends_on.push("web-2".into());
        let long = "a".repeat(40);
        let found = Found {
            source: "a test".into(),
            build: None,
            services: vec![
                Draft::new("web-2", vec!["b".into()]),
                Draft::new("web", vec!["c".into()]),
                Draft::new("web", vec!["d".into()]),
                api,
                Draft::new(&long, vec!["e".into()]),
                Draft::new(&long, vec!["f".into()]),
            ],
            skipped: Vec::new(),
            unmapped: Vec::new(),
        };
        let text = render(&found);
        let config = crate::config::parse(std::path::Path::new("/p/msctl.toml"), &text)
            .unwrap_or_else(|e| panic!("{}\n{text}", e.message));
        let names: Vec<&str> = config.services.keys().map(String::as_str).collect();
        let long2 = format!("{}2", "a".repeat(34));
        assert_eq!(names, [&long2, &long, "api", "web", "web2", "web3"]);
        assert_eq!(config.services["web2"].command, ["b"]);
        assert_eq!(config.services["web3"].command, ["d"]);
        assert_eq!(config.services["api"].depends_on, ["web2"]);
        assert!(text.contains("# renamed from `web-2`: that is the id msctl gives an instance of another service\n[services.web2]"), "{text}");
    }

    #[test]
    fn the_file_parses_as_msctl_toml_and_keeps_every_guess() {
        let mut web = Draft::new("web", vec!["npm".into(), "start".into()]);
        web.notes.push("check: it must listen on PORT".into());
        web.env.insert("NODE_ENV".into(), "development".into());
        web.env
            .insert("weird key".into(), "a \"quoted\" value".into());
        web.depends_on.push("db".into());
        web.replicas = 2;
        let mut db = Draft::new("db", vec!["sleep".into(), "9".into()]);
        db.health = "none".into();
        let dup = Draft::new("web", vec!["true".into()]);
        let found = Found {
            source: "a test".into(),
            build: Some((vec!["npm".into(), "ci".into()], "installs packages".into())),
            services: vec![web, db, dup],
            skipped: vec![Skipped {
                name: "cache".into(),
                why: "only an image".into(),
                suggestion: "install redis-server".into(),
                table: infrastructure("redis:7", "cache").map(|(_, t)| t),
            }],
            unmapped: vec!["services.web.volumes".into()],
        };
        let text = render(&found);
        let config = crate::config::parse(std::path::Path::new("/p/msctl.toml"), &text)
            .unwrap_or_else(|e| panic!("{}\n{text}", e.message));
        assert_eq!(
            config.services.keys().collect::<Vec<_>>(),
            ["db", "web", "web2"]
        );
        assert_eq!(config.services["web"].replicas, 2);
        assert_eq!(
            config.services["web"].env["weird key"],
            "a \"quoted\" value"
        );
        assert!(text.contains("# check: it must listen on PORT\n[services.web]"));
        assert!(text.contains("# [services.cache]\n# command = [\"redis-server\""));
        assert!(text.contains("# - services.web.volumes"));
        let lines = report(&found);
        assert!(lines.iter().any(|l| l.starts_with("not imported: cache")));
    }

    #[test]
    fn an_empty_project_gets_a_file_to_scaffold_into() {
        let text = render(&Found {
            source: "an empty folder".into(),
            ..Found::default()
        });
        let config =
            crate::config::parse_to_edit(std::path::Path::new("/p/msctl.toml"), &text).unwrap();
        assert!(config.services.is_empty());
        assert!(text.contains("msctl scaffold NAME"));
    }

    #[test]
    fn suggested_infrastructure_tables_are_valid_once_uncommented() {
        for image in [
            "postgres:16",
            "docker.io/library/redis:7-alpine",
            "nats:2.10",
        ] {
            let (_, table) = infrastructure(image, "infra").unwrap();
            let config = crate::config::parse(std::path::Path::new("/p/msctl.toml"), &table)
                .unwrap_or_else(|e| panic!("{image}: {}\n{table}", e.message));
            assert!(config.services["infra"].install.is_some());
        }
        assert!(infrastructure("mycompany/api:1", "api").is_none());
    }
}
