//! Compose import: the services of a compose file that msctl can run as processes (a
//! `command`, or a `build` context holding something `init` recognises), with their
//! `depends_on`, `environment`, `healthcheck`, `deploy.replicas` and `restart`. Services that are
//! only an image are listed with a suggestion; every key not mapped is reported.

use super::{Draft, Found, Skipped, detect, infrastructure, service_name};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Keys of a compose service that are mapped, or decide how it is mapped.
const MAPPED: [&str; 12] = [
    "command",
    "profiles",
    "entrypoint",
    "env_file",
    "build",
    "image",
    "depends_on",
    "environment",
    "healthcheck",
    "deploy",
    "restart",
    "ports",
];

/// Images msctl knows as infrastructure: never run from a `command`, always suggested.
const INFRASTRUCTURE: [&str; 8] = [
    "postgres",
    "postgresql",
    "redis",
    "valkey",
    "nats",
    "mysql",
    "mariadb",
    "mongo",
];

/// The services of the compose file `text` found in `root`, or why it cannot be read.
pub fn import(root: &Path, file_name: &str, text: &str) -> Result<Found, String> {
    let mut yaml: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
        let place = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        format!("{file_name}{place}: not valid YAML: {e}")
    })?;
    // Compose files share settings through `<<: *anchor` merge keys (YAML 1.1, which compose
    // follows); they are part of each service that merges them.
    yaml.apply_merge()
        .map_err(|e| format!("{file_name}: a `<<` merge key cannot be applied: {e}"))?;
    let doc: Value =
        serde_json::to_value(&yaml).map_err(|e| format!("{file_name}: not a compose file: {e}"))?;
    let Some(services) = doc.get("services").and_then(Value::as_object) else {
        return Err(format!("{file_name} has no `services` mapping"));
    };
    let mut found = Found {
        source: file_name.to_string(),
        ..Found::default()
    };
    if let Some(top) = doc.as_object() {
        for key in top.keys().filter(|k| *k != "services") {
            let why = match key.as_str() {
                "version" | "name" => "not needed by msctl",
                "volumes" => "named volumes: a service keeps data in its MSCTL_DATA_DIR",
                "networks" => "services talk over loopback, found through the registry",
                _ => "no msctl equivalent",
            };
            found.unmapped.push(format!("top-level `{key}`: {why}"));
        }
    }
    // Which compose services become msctl services, decided first so that dependencies on
    // one that does not can be dropped with a word.
    let mut imported: BTreeMap<String, String> = BTreeMap::new();
    let mut drafts = Vec::new();
    for (compose_name, spec) in services {
        let Some(name) = service_name(compose_name) else {
            found.unmapped.push(format!(
                "service `{compose_name}`: not a name msctl accepts (lowercase letters, digits, dashes)"
            ));
            continue;
        };
        match service(root, compose_name, &name, spec, &mut found) {
            Some(draft) => {
                imported.insert(compose_name.clone(), name.clone());
                drafts.push((compose_name.clone(), spec.clone(), draft));
            }
            None => continue,
        }
    }
    // What others wait for to finish (`service_completed_successfully`) is a job here.
    let awaited: Vec<String> = services
        .values()
        .filter_map(|spec| spec.get("depends_on")?.as_object())
        .flat_map(|deps| deps.iter())
        .filter(|(_, v)| {
            v.get("condition").and_then(Value::as_str) == Some("service_completed_successfully")
        })
        .map(|(dep, _)| dep.clone())
        .collect();
    for (compose_name, spec, mut draft) in drafts {
        if awaited.contains(&compose_name) {
            draft.job = true;
            draft.notes.push(
                "a job: others wait for it to finish with code 0 (compose's service_completed_successfully)"
                    .into(),
            );
        }
        dependencies(&compose_name, &spec, &imported, &mut draft, &mut found);
        found.services.push(draft);
    }
    Ok(found)
}

fn image_base(image: &str) -> &str {
    image
        .rsplit('/')
        .next()
        .unwrap_or(image)
        .split([':', '@'])
        .next()
        .unwrap_or_default()
}

/// Words of a compose `command`: a list as it is, a string split as a shell would.
fn words(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => shlex::split(s).filter(|w| !w.is_empty()),
        Value::Array(items) => {
            let w: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            (!w.is_empty()).then_some(w)
        }
        _ => None,
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn service(
    root: &Path,
    compose_name: &str,
    name: &str,
    spec: &Value,
    found: &mut Found,
) -> Option<Draft> {
    let at = |key: &str| format!("services.{compose_name}.{key}");
    if !spec.is_object() {
        found.skipped.push(Skipped {
            name: compose_name.into(),
            why: "its definition is not a mapping of keys (command, build, image…)".into(),
            suggestion: "fix it in the compose file, or write its msctl.toml table by hand".into(),
            table: None,
        });
        return None;
    }
    let image = spec.get("image").and_then(Value::as_str);
    let infrastructure_image = image.is_some_and(|i| INFRASTRUCTURE.contains(&image_base(i)));
    // The entrypoint runs with the command as its arguments, as docker runs them.
    let command = match (
        spec.get("entrypoint").and_then(words),
        spec.get("command").and_then(words),
    ) {
        (Some(mut entrypoint), command) => {
            entrypoint.extend(command.unwrap_or_default());
            Some(entrypoint)
        }
        (None, command) => command,
    };
    let build = spec.get("build").and_then(|b| match b {
        Value::String(s) => Some(s.clone()),
        other => other
            .get("context")
            .and_then(Value::as_str)
            .map(str::to_string),
    });
    let mut draft = match (&build, &command) {
        _ if infrastructure_image && build.is_none() => {
            skip_image(compose_name, name, image.unwrap_or_default(), found);
            return None;
        }
        (_, Some(command)) => {
            let mut d = Draft::new(name, port_placeholders(command));
            d.notes.push(format!(
                "compose: {compose_name}, command `{}`",
                command.join(" ")
            ));
            match (&build, image) {
                (Some(context), _) => d.notes.push(format!(
                    "check: compose ran it in the image built from {context}; here it runs in this folder"
                )),
                (None, Some(image)) => d.notes.push(format!(
                    "check: compose ran it inside the image {image}; here the program must be installed on this machine"
                )),
                (None, None) => {}
            }
            d
        }
        (Some(context), None) => {
            let dir = context.trim_start_matches("./").trim_end_matches('/');
            let dir = if dir == "." { "" } else { dir };
            if dir.starts_with('/') || dir.contains("..") || !root.join(dir).is_dir() {
                found.skipped.push(Skipped {
                    name: compose_name.into(),
                    why: format!("its build context `{context}` is not a folder of this project"),
                    suggestion: "give it a `command` in msctl.toml".into(),
                    table: None,
                });
                return None;
            }
            match detect::detect_in(root, dir) {
                Some((mut services, build_step)) => {
                    let mut d = services.remove(0);
                    if !services.is_empty() {
                        d.notes.push(format!(
                            "check: {} has other binaries too; this one was taken",
                            if dir.is_empty() { "this folder" } else { dir }
                        ));
                    }
                    d.name = name.to_string();
                    d.notes
                        .insert(0, format!("compose: {compose_name}, built from {context}"));
                    if let Some((b, _)) = build_step {
                        d.build = Some(b);
                    }
                    d
                }
                None => {
                    found.skipped.push(Skipped {
                        name: compose_name.into(),
                        why: format!(
                            "its build context `{context}` holds nothing msctl can run as a process (no Cargo binary, npm start script or Python entry point)"
                        ),
                        suggestion: "give it a `command` in msctl.toml, or keep running it with docker".into(),
                        table: None,
                    });
                    return None;
                }
            }
        }
        (None, None) => {
            match image {
                Some(image) => skip_image(compose_name, name, image, found),
                None => found.skipped.push(Skipped {
                    name: compose_name.into(),
                    why: "it has no command, build or image".into(),
                    suggestion: "give it a `command` in msctl.toml".into(),
                    table: None,
                }),
            }
            return None;
        }
    };
    if let Some(profiles) = spec.get("profiles").and_then(Value::as_array) {
        for p in profiles.iter().map(scalar) {
            match service_name(&p) {
                Some(name) => draft.profiles.push(name),
                None => found.unmapped.push(format!(
                    "{}: `{p}` is not a profile name msctl accepts",
                    at("profiles")
                )),
            }
        }
    }
    if let Some(files) = spec.get("env_file") {
        env_files(root, files, &at("env_file"), &mut draft, found);
    }
    if let Some(env) = spec.get("environment") {
        environment(env, &at("environment"), &mut draft, found);
    }
    if let Some(h) = spec.get("healthcheck") {
        healthcheck(h, &at("healthcheck"), &mut draft, found);
    } else if !draft.notes.iter().any(|n| n.starts_with("health:")) {
        draft
            .notes
            .push("no healthcheck: health is a connection to its port".into());
    }
    if let Some(deploy) = spec.get("deploy").and_then(Value::as_object) {
        for (k, v) in deploy {
            match (k.as_str(), v.as_u64()) {
                ("replicas", Some(n)) if n >= 1 => {
                    draft.set_replicas(n, &format!("{}: {n}", at("deploy.replicas")))
                }
                _ => found
                    .unmapped
                    .push(format!("{}: not mapped", at(&format!("deploy.{k}")))),
            }
        }
    }
    if let Some(r) = spec.get("restart").and_then(Value::as_str) {
        draft.restart = match r.split(':').next().unwrap_or(r) {
            "no" => Some("no".into()),
            "always" => Some("always".into()),
            "on-failure" => Some("on-failure".into()),
            "unless-stopped" => {
                draft
                    .notes
                    .push("restart: unless-stopped is `always` here".into());
                Some("always".into())
            }
            other => {
                found.unmapped.push(format!(
                    "{}: `{other}` is not a restart policy",
                    at("restart")
                ));
                None
            }
        };
    }
    if let Some(ports) = spec.get("ports") {
        draft.notes.push(format!(
            "check: compose published {}; msctl gives each instance a free port in PORT, which it must listen on",
            ports_text(ports)
        ));
    }
    if let Some(map) = spec.as_object() {
        for key in map.keys().filter(|k| !MAPPED.contains(&k.as_str())) {
            found.unmapped.push(format!("{}: not mapped", at(key)));
        }
    }
    Some(draft)
}

fn ports_text(ports: &Value) -> String {
    match ports {
        Value::Array(items) => items
            .iter()
            .map(|p| match p {
                Value::Object(o) => o.get("target").map(scalar).unwrap_or_else(|| p.to_string()),
                other => scalar(other),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => scalar(other),
    }
}

fn port_placeholders(command: &[String]) -> Vec<String> {
    command.iter().map(|w| port_placeholder(w)).collect()
}

/// `${PORT}` and `$PORT` as `{port}`; `$$PORT` and `$${PORT}` are the shell's, at run time,
/// and stay (msctl, as compose, gives the shell `$PORT` for them, which msctl also sets).
fn port_placeholder(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(more) = after.strip_prefix("$$") {
            out.push_str("$$");
            rest = more;
        } else if let Some(more) = after.strip_prefix("${PORT}") {
            out.push_str("{port}");
            rest = more;
        } else if let Some(more) = after
            .strip_prefix("$PORT")
            .filter(|m| !m.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
        {
            out.push_str("{port}");
            rest = more;
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    out
}

fn skip_image(compose_name: &str, name: &str, image: &str, found: &mut Found) {
    let (suggestion, table) = match infrastructure(image, name) {
        Some((package, table)) => (
            format!(
                "run it as a process from Debian's packages (`apt-get install {package}`): uncomment the table below"
            ),
            Some(table),
        ),
        None => (
            "keep running it with docker alongside msctl, or give it a `command` that runs it on this machine".to_string(),
            None,
        ),
    };
    found.skipped.push(Skipped {
        name: compose_name.into(),
        why: format!("only an image ({image}), nothing to run as a process"),
        suggestion,
        table,
    });
}

/// `env_file`: a path, a list of paths, or of `{path, required}`; one that is not required
/// and not there is left out, as compose leaves it.
fn env_files(root: &Path, files: &Value, at: &str, draft: &mut Draft, found: &mut Found) {
    let items = match files {
        Value::Array(items) => items.clone(),
        one => vec![one.clone()],
    };
    for item in items {
        let (path, required) = match &item {
            Value::String(p) => (p.clone(), true),
            Value::Object(o) => match o.get("path").and_then(Value::as_str) {
                Some(p) => (
                    p.to_string(),
                    o.get("required").and_then(Value::as_bool).unwrap_or(true),
                ),
                None => {
                    found
                        .unmapped
                        .push(format!("{at}: an entry with no `path`"));
                    continue;
                }
            },
            other => {
                found
                    .unmapped
                    .push(format!("{at}: `{other}` is not a file"));
                continue;
            }
        };
        let path = path.trim_start_matches("./").to_string();
        if !required && !root.join(&path).is_file() {
            continue;
        }
        draft.env_files.push(path);
    }
}

fn environment(env: &Value, at: &str, draft: &mut Draft, found: &mut Found) {
    let pairs: Vec<(String, Option<String>)> = match env {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), (!v.is_null()).then(|| scalar(v))))
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                let s = scalar(i);
                match s.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (s, None),
                }
            })
            .collect(),
        _ => {
            found
                .unmapped
                .push(format!("{at}: neither a mapping nor a list"));
            return;
        }
    };
    for (k, v) in pairs {
        match v {
            Some(v) => {
                draft.env.insert(k, v);
            }
            None => found.unmapped.push(format!(
                "{at}.{k}: no value (compose takes it from the shell); set it in `env`"
            )),
        }
    }
}

fn healthcheck(h: &Value, at: &str, draft: &mut Draft, found: &mut Found) {
    if h.get("disable").and_then(Value::as_bool) == Some(true) {
        draft.health = "none".into();
        draft
            .notes
            .push("healthcheck disabled: no health check".into());
        return;
    }
    // The compose healthcheck is what the author meant; a guess from the code gives way.
    let guessed = |n: &String| n.starts_with("health:") || n.starts_with("check: no /health");
    if h.get("test").is_some() {
        draft.notes.retain(|n| !guessed(n));
    }
    let test = h.get("test").map(|t| match t {
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(" "),
        other => scalar(other),
    });
    match test.as_deref() {
        Some(t) if t.trim() == "NONE" || t.starts_with("NONE") => {
            draft.health = "none".into();
            draft.notes.push("healthcheck NONE: no health check".into());
        }
        Some(t) => match http_path(t) {
            Some(path) => {
                draft.health = path.clone();
                draft.notes.push(format!(
                    "health: {path}, from the compose healthcheck `{}`",
                    t.trim()
                ));
            }
            None => {
                draft.health = "tcp".into();
                draft.notes.push(format!(
                    "check: the compose healthcheck `{}` is not an HTTP check; health is a connection to its port",
                    t.trim()
                ));
            }
        },
        None => {}
    }
    for (key, value) in h.as_object().into_iter().flatten() {
        match key.as_str() {
            "test" | "disable" => {}
            "interval" => match value
                .as_str()
                .filter(|s| crate::config::parse_duration(s).is_some())
            {
                Some(s) => draft.health_interval = Some(s.to_string()),
                None => found.unmapped.push(format!(
                    "{at}.interval: `{}` is not a duration msctl reads",
                    scalar(value)
                )),
            },
            "retries" => match value.as_u64().filter(|n| *n >= 1) {
                Some(n) => draft.unhealthy_after = Some(n as u32),
                None => found.unmapped.push(format!("{at}.retries: not a count")),
            },
            "start_period" => {
                // msctl waits 30 s by default for the first healthy answer.
                if value
                    .as_str()
                    .and_then(crate::config::parse_duration)
                    .is_some_and(|d| d.as_secs() > 30)
                {
                    draft.start_timeout = value.as_str().map(str::to_string);
                }
            }
            other => found.unmapped.push(format!("{at}.{other}: not mapped")),
        }
    }
}

/// The path of an HTTP health test: `curl -f http://localhost:8080/health`,
/// `wget -qO- http://127.0.0.1/healthz`.
fn http_path(test: &str) -> Option<String> {
    let start = test.find("http://").or_else(|| test.find("https://"))?;
    let url = &test[start..];
    let url = url
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
        .next()?;
    let after_scheme = url.split_once("://")?.1;
    let host = after_scheme.split(['/', ':']).next().unwrap_or_default();
    if !["localhost", "127.0.0.1", "0.0.0.0", "[::1]", ""].contains(&host) {
        return None;
    }
    let path = after_scheme.find('/').map(|i| &after_scheme[i..])?;
    let path = path.split(['?', '#']).next().unwrap_or(path);
    (path.len() > 1).then(|| path.to_string())
}

fn dependencies(
    compose_name: &str,
    spec: &Value,
    imported: &BTreeMap<String, String>,
    draft: &mut Draft,
    found: &mut Found,
) {
    let deps: Vec<(String, Option<String>)> = match spec.get("depends_on") {
        Some(Value::Array(items)) => items.iter().map(|i| (scalar(i), None)).collect(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.get("condition")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                )
            })
            .collect(),
        Some(_) => {
            found.unmapped.push(format!(
                "services.{compose_name}.depends_on: neither a list nor a mapping"
            ));
            return;
        }
        None => return,
    };
    for (dep, condition) in deps {
        let Some(name) = imported.get(&dep) else {
            draft.notes.push(format!(
                "check: depended on `{dep}`, which is not imported; start it yourself before `msctl up`"
            ));
            continue;
        };
        match condition.as_deref() {
            None | Some("service_healthy") | Some("service_started") => {}
            // The dependency became a job, which is ready when it has finished.
            Some("service_completed_successfully") => {}
            Some(other) => found.unmapped.push(format!(
                "services.{compose_name}.depends_on.{dep}.condition: `{other}` is not a condition msctl knows"
            )),
        }
        if condition.as_deref() == Some("service_started") {
            draft.notes.push(format!(
                "depends on `{dep}` being started; msctl starts it first and waits until it is healthy"
            ));
        }
        draft.depends_on.push(name.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPOSE: &str = r#"
name: shop
services:
  api:
    build: ./api
    environment:
      RUST_LOG: debug
      RETRIES: 3
    depends_on:
      db:
        condition: service_healthy
      cache:
        condition: service_started
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost:8080/health"]
      interval: 5s
      retries: 4
      timeout: 2s
    deploy:
      replicas: 2
    ports: ["8080:8080"]
    volumes: ["./data:/data"]
  worker:
    image: python:3.12
    command: python3 worker.py --port $PORT
    environment: ["QUEUE=jobs", "SECRET"]
    healthcheck:
      test: ["CMD-SHELL", "pgrep python"]
    restart: unless-stopped
    depends_on: [api]
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: example
  cache:
    image: redis:7
  web:
    image: nginx
volumes:
  data: {}
"#;

    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("api/src")).unwrap();
        std::fs::write(
            dir.path().join("api/Cargo.toml"),
            "[package]\nname = \"api\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("api/src/main.rs"), "fn main() {}\n").unwrap();
        dir
    }

    #[test]
    fn services_are_mapped_and_the_rest_reported() {
        let dir = project();
        let found = import(dir.path(), "compose.yaml", COMPOSE).unwrap();
        let names: Vec<&str> = found.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "worker"]);
        let api = &found.services[0];
        assert_eq!(api.health, "/health");
        assert_eq!(api.replicas, 2);
        assert_eq!(api.health_interval.as_deref(), Some("5s"));
        assert_eq!(api.unhealthy_after, Some(4));
        assert_eq!(api.env["RETRIES"], "3");
        assert!(api.depends_on.is_empty(), "db and cache are not imported");
        assert!(api.command[0].ends_with("/debug/api"), "{:?}", api.command);
        let worker = &found.services[1];
        assert_eq!(worker.command, ["python3", "worker.py", "--port", "{port}"]);
        assert_eq!(worker.health, "tcp");
        assert_eq!(worker.restart.as_deref(), Some("always"));
        assert_eq!(worker.depends_on, ["api"]);
        let skipped: Vec<&str> = found.skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(skipped, ["cache", "db", "web"]);
        assert!(
            found.skipped[1]
                .suggestion
                .contains("apt-get install postgresql")
        );
        assert!(found.skipped[1].table.is_some());
        assert!(found.skipped[2].table.is_none());
        for key in [
            "top-level `volumes`",
            "top-level `name`",
            "services.api.volumes",
            "services.api.healthcheck.timeout",
            "services.worker.environment.SECRET",
        ] {
            assert!(
                found.unmapped.iter().any(|u| u.starts_with(key)),
                "{key} in {:?}",
                found.unmapped
            );
        }
        let text = super::super::render(&found);
        crate::config::parse(&dir.path().join("msctl.toml"), &text)
            .unwrap_or_else(|e| panic!("{}\n{text}", e.message));
    }

    #[test]
    fn broken_files_are_named_with_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let err = import(dir.path(), "compose.yaml", "services:\n  a: [\n").unwrap_err();
        assert!(err.starts_with("compose.yaml:"), "{err}");
        let err = import(dir.path(), "compose.yaml", "version: '3'\n").unwrap_err();
        assert!(err.contains("no `services`"), "{err}");
        let found = import(
            dir.path(),
            "compose.yaml",
            "services:\n  a: null\n  b: {}\n",
        )
        .unwrap();
        assert!(
            found.skipped[0].why.contains("not a mapping"),
            "{:?}",
            found.skipped
        );
        assert!(found.skipped[1].why.contains("no command, build or image"));
    }

    #[test]
    fn merge_keys_and_entrypoints_are_followed() {
        // Shared settings through an `x-` anchor and `<<`, and an entrypoint the command is
        // given to: both were read past, so the worker ran `worker.py` with no interpreter.
        let dir = tempfile::tempdir().unwrap();
        let compose = r#"
x-common: &common
  restart: unless-stopped
  environment: {LOG: debug}
  deploy: {replicas: 2}
services:
  worker:
    <<: *common
    entrypoint: ["python", "-u"]
    command: worker.py --queue jobs
  shell:
    <<: *common
    environment: {OWN: "1"}
    entrypoint: sh -c 'exec server --port $${PORT}'
"#;
        let found = import(dir.path(), "compose.yaml", compose).unwrap();
        let worker = &found.services[1];
        assert_eq!(worker.name, "worker");
        assert_eq!(
            worker.command,
            ["python", "-u", "worker.py", "--queue", "jobs"]
        );
        assert_eq!(worker.replicas, 2);
        assert_eq!(worker.env["LOG"], "debug");
        // A service's own key wins over the merged one, whole, as YAML merges.
        let shell = &found.services[0];
        assert_eq!(shell.env.keys().collect::<Vec<_>>(), ["OWN"]);
        assert!(
            !found
                .unmapped
                .iter()
                .any(|u| u.contains("<<") || u.contains("entrypoint"))
        );
        // `$$` stays for the shell: msctl expands it as compose does.
        let text = crate::init::render(&found);
        let config = crate::config::parse(std::path::Path::new("/p/msctl.toml"), &text)
            .unwrap_or_else(|e| panic!("{}\n{text}", e.message));
        let arg = &config.services["shell"].command[2];
        assert_eq!(
            crate::config::expand_vars(arg, |_| None).unwrap(),
            "exec server --port ${PORT}"
        );
    }

    #[test]
    fn what_others_wait_to_finish_becomes_a_job() {
        let dir = tempfile::tempdir().unwrap();
        let compose = r#"
services:
  migrate:
    command: ["./migrate.sh"]
    healthcheck: {test: ["CMD", "curl", "-f", "http://localhost/health"]}
  api:
    command: ["./api"]
    depends_on:
      migrate: {condition: service_completed_successfully}
"#;
        let found = import(dir.path(), "compose.yaml", compose).unwrap();
        let by_name = |n: &str| found.services.iter().find(|d| d.name == n).unwrap();
        assert!(by_name("migrate").job && !by_name("api").job);
        assert_eq!(by_name("api").depends_on, ["migrate"]);
        let text = crate::init::render(&found);
        let config = crate::config::parse(std::path::Path::new("/p/msctl.toml"), &text)
            .unwrap_or_else(|e| panic!("{}\n{text}", e.message));
        assert!(config.services["migrate"].job, "{text}");
        // Profiles are kept.
        let found = import(
            dir.path(),
            "compose.yaml",
            "services:\n  adminer:\n    command: [\"adminer\"]\n    profiles: [debug, Tools_X]\n",
        )
        .unwrap();
        assert_eq!(found.services[0].profiles, ["debug", "tools-x"]);
        assert!(
            text.contains("# a job: others wait for it to finish with code 0"),
            "{text}"
        );
    }

    #[test]
    fn env_files_are_kept_and_optional_missing_ones_left_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("there.env"), "A=1\n").unwrap();
        let compose = r#"
services:
  one:
    command: ["a"]
    env_file: ./app.env
  many:
    command: ["b"]
    env_file:
      - app.env
      - {path: there.env, required: false}
      - {path: absent.env, required: false}
      - {required: true}
"#;
        let found = import(dir.path(), "compose.yaml", compose).unwrap();
        let by_name = |n: &str| found.services.iter().find(|d| d.name == n).unwrap();
        assert_eq!(by_name("one").env_files, ["app.env"]);
        assert_eq!(by_name("many").env_files, ["app.env", "there.env"]);
        assert!(
            found
                .unmapped
                .iter()
                .any(|u| u == "services.many.env_file: an entry with no `path`"),
            "{:?}",
            found.unmapped
        );
        let text = crate::init::render(&found);
        let config = crate::config::parse(std::path::Path::new("/p/msctl.toml"), &text)
            .unwrap_or_else(|e| panic!("{}\n{text}", e.message));
        assert_eq!(config.services["many"].env_files, ["app.env", "there.env"]);
    }

    #[test]
    fn the_port_becomes_a_placeholder_unless_it_is_the_shells() {
        for (word, placed) in [
            ("--port=${PORT}", "--port={port}"),
            ("$PORT", "{port}"),
            ("$PORTS", "$PORTS"),
            ("$${PORT} $$PORT ${PORT}", "$${PORT} $$PORT {port}"),
            ("a$", "a$"),
        ] {
            assert_eq!(port_placeholder(word), placed, "{word}");
        }
    }

    #[test]
    fn http_health_tests_give_their_path() {
        assert_eq!(
            http_path("CMD curl -f http://localhost:8080/health").as_deref(),
            Some("/health")
        );
        assert_eq!(
            http_path("wget -qO- http://127.0.0.1/healthz?full=1 || exit 1").as_deref(),
            Some("/healthz")
        );
        assert_eq!(http_path("curl http://example.com/health"), None);
        assert_eq!(http_path("pg_isready -U postgres"), None);
        assert_eq!(http_path("curl http://localhost:8080"), None);
    }
}
