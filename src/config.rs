//! msctl.toml: finding it, reading it, and checking it, with errors that name the file, line and column.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

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
    pub restart: RestartPolicy,
    pub stop_timeout: Duration,
    pub start_timeout: Duration,
    pub health_interval: Duration,
    /// Failed liveness probes in a row that make an instance unhealthy.
    pub unhealthy_after: u32,
    /// Restarts in a row after which a crashing service is left down.
    pub max_restarts: u32,
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

/// A problem in msctl.toml, located to the line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
    /// The offending line and a caret under the offending part.
    pub snippet: String,
}

impl ConfigError {
    fn at(
        path: &Path,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let source = &text[line_start..line_end];
        let width = text[start..span.end.clamp(start, line_end)]
            .chars()
            .count()
            .max(1);
        let gutter = line.to_string().len();
        let snippet = format!(
            "{:gutter$} |\n{line} | {source}\n{:gutter$} | {}{}",
            "",
            "",
            " ".repeat(column - 1),
            "^".repeat(width)
        );
        Self {
            path: path.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint,
            snippet,
        }
    }
}

/// Why no config could be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no {MANIFEST} in {} or any parent folder", .0.display())]
    NotFound(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Finds msctl.toml in `start` or the nearest parent, as cargo finds Cargo.toml.
pub fn find(start: &Path) -> Result<PathBuf, LoadError> {
    start
        .ancestors()
        .map(|dir| dir.join(MANIFEST))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| LoadError::NotFound(start.to_path_buf()))
}

/// Reads and checks the manifest at `path`.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(parse(&path, &text)?)
}

/// Checks `text` as the manifest at `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: RawManifest = toml::from_str(text).map_err(|e| from_toml_error(path, text, &e))?;
    check(path, text, raw)
}

fn from_toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim().to_string();
    // serde's words for an unknown key are "unknown field `x`, expected one of ..."; say it our way,
    // with the nearest known key as a suggestion.
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or_default();
        let known: Vec<&str> = rest
            .split('`')
            .skip(2)
            .step_by(2)
            .filter(|k| !k.is_empty())
            .collect();
        let hint = did_you_mean(key, known.iter().copied()).map(|k| format!("did you mean `{k}`?"));
        let hint = hint
            .or_else(|| (!known.is_empty()).then(|| format!("known keys: {}", known.join(", "))));
        return ConfigError::at(path, text, span, format!("unknown key `{key}`"), hint);
    }
    // serde says "sequence" where a TOML user thinks "array"; the example fits the key.
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let key = text[line_start..start]
        .split('=')
        .next()
        .unwrap_or_default()
        .trim();
    let example = match key {
        "command" | "build" => " such as [\"program\", \"arg\"]",
        "depends_on" => " of service names such as [\"users\"]",
        _ => "",
    };
    let message = message.replace(
        "expected a sequence",
        &format!("expected an array{example}"),
    );
    ConfigError::at(path, text, span, message, None)
}

/// The closest of `candidates` to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A service name: used in file names, URL prefixes and variable names, so kept plain.
pub fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 40
        && !name.ends_with('-')
}

fn check(path: &Path, text: &str, raw: RawManifest) -> Result<Config, ConfigError> {
    let err = |span: Range<usize>, msg: String, hint: Option<String>| {
        ConfigError::at(path, text, span, msg, hint)
    };
    let defaults = raw.defaults.unwrap_or_default();
    let names: BTreeSet<String> = raw.services.keys().map(|k| k.get_ref().clone()).collect();
    let mut services = BTreeMap::new();
    let mut fixed_ports: BTreeMap<u16, String> = BTreeMap::new();
    if raw.services.is_empty() {
        return Err(err(
            0..0,
            "no services: msctl.toml has no [services.NAME] table".into(),
            Some("add one, such as\n  [services.web]\n  command = [\"path/to/program\"]".into()),
        ));
    }
    // Zero would make a timer spin or a stop that never waits; every duration must be positive.
    let duration = |key: &str, value: Option<&Spanned<Seconds>>, default: Duration| match value {
        Some(v) if v.get_ref().0.is_zero() => Err(err(
            v.span(),
            format!("`{key}` must be longer than zero"),
            Some(format!(
                "write a positive duration such as \"{}\"",
                humanish(default)
            )),
        )),
        Some(v) => Ok(v.get_ref().0),
        None => Ok(default),
    };
    for (name, table) in &raw.services {
        let span = name.span();
        let name = name.get_ref().clone();
        if !valid_service_name(&name) {
            return Err(err(
                span,
                format!("service name `{name}` is not allowed"),
                Some(
                    "use lowercase letters, digits and dashes, starting with a letter (at most 40)"
                        .into(),
                ),
            ));
        }
        let s = table.get_ref();
        let command = match &s.command {
            None => {
                return Err(err(
                    span,
                    format!("service `{name}` has no `command`"),
                    Some("add `command = [\"path/to/program\", \"arg\"]`".into()),
                ));
            }
            Some(c) if c.get_ref().is_empty() || c.get_ref()[0].trim().is_empty() => {
                return Err(err(
                    c.span(),
                    format!("the command of service `{name}` is empty"),
                    Some("give the program to run, then its arguments".into()),
                ));
            }
            Some(c) => c.get_ref().clone(),
        };
        let build = s.build.as_ref().or(defaults.build.as_ref());
        if let Some(b) =
            build.filter(|b| b.get_ref().is_empty() || b.get_ref()[0].trim().is_empty())
        {
            return Err(err(
                b.span(),
                format!("the build command of service `{name}` is empty"),
                Some("remove `build`, or give the program to run".into()),
            ));
        }
        let replicas = s
            .replicas
            .as_ref()
            .map(|r| (*r.get_ref(), r.span()))
            .unwrap_or((defaults.replicas.unwrap_or(1), span.clone()));
        if replicas.0 == 0 {
            return Err(err(
                replicas.1,
                format!("service `{name}` needs at least 1 replica"),
                None,
            ));
        }
        let port = s.port.as_ref().map(|p| (*p.get_ref(), p.span()));
        if let Some((Port::Fixed(n), port_span)) = &port {
            if replicas.0 > 1 {
                return Err(err(
                    port_span.clone(),
                    format!(
                        "service `{name}` has {} replicas but one fixed port {n}",
                        replicas.0
                    ),
                    Some("use `port = \"auto\"` for replicated services".into()),
                ));
            }
            if let Some(other) = fixed_ports.insert(*n, name.clone()) {
                return Err(err(
                    port_span.clone(),
                    format!("port {n} is given to both `{other}` and `{name}`"),
                    Some("give each service its own port, or use `port = \"auto\"`".into()),
                ));
            }
        }
        let mut depends_on = Vec::new();
        for dep in s.depends_on.iter().flatten() {
            let d = dep.get_ref();
            if !names.contains(d) {
                let hint = did_you_mean(d, names.iter().map(String::as_str))
                    .map(|n| format!("did you mean `{n}`?"));
                let hint = hint.or_else(|| {
                    Some(format!(
                        "known services: {}",
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ))
                });
                return Err(err(
                    dep.span(),
                    format!(
                        "service `{name}` depends on `{d}`, which is not a service in this file"
                    ),
                    hint,
                ));
            }
            if *d == name {
                return Err(err(
                    dep.span(),
                    format!("service `{name}` depends on itself"),
                    None,
                ));
            }
            depends_on.push(d.clone());
        }
        let mut env = defaults.env.clone().unwrap_or_default();
        env.extend(s.env.clone().unwrap_or_default());
        let service = Service {
            command,
            build: build.map(|b| b.get_ref().clone()),
            health: s
                .health
                .clone()
                .or(defaults.health.clone())
                .unwrap_or(Health::Http("/health".into())),
            port: port.map(|p| p.0).unwrap_or(Port::Auto),
            replicas: replicas.0,
            depends_on,
            env,
            restart: s
                .restart
                .or(defaults.restart)
                .unwrap_or(RestartPolicy::OnFailure),
            stop_timeout: duration(
                "stop_timeout",
                s.stop_timeout.as_ref().or(defaults.stop_timeout.as_ref()),
                Duration::from_secs(10),
            )?,
            start_timeout: duration(
                "start_timeout",
                s.start_timeout.as_ref().or(defaults.start_timeout.as_ref()),
                Duration::from_secs(30),
            )?,
            health_interval: duration(
                "health_interval",
                s.health_interval
                    .as_ref()
                    .or(defaults.health_interval.as_ref()),
                Duration::from_secs(1),
            )?,
            unhealthy_after: match s
                .unhealthy_after
                .as_ref()
                .or(defaults.unhealthy_after.as_ref())
            {
                Some(n) if *n.get_ref() == 0 => {
                    return Err(err(
                        n.span(),
                        "`unhealthy_after` must be at least 1".into(),
                        Some("it counts failed health checks in a row; 3 is the default".into()),
                    ));
                }
                Some(n) => *n.get_ref(),
                None => 3,
            },
            max_restarts: s.max_restarts.or(defaults.max_restarts).unwrap_or(5),
            name: name.clone(),
        };
        services.insert(name, service);
    }
    if let Some(cycle) = find_cycle(&services) {
        let first = &cycle[0];
        let second = &cycle[1];
        let span = raw
            .services
            .iter()
            .find(|(k, _)| k.get_ref() == first)
            .and_then(|(_, t)| {
                t.get_ref()
                    .depends_on
                    .iter()
                    .flatten()
                    .find(|d| d.get_ref() == second)
                    .map(|d| d.span())
            })
            .unwrap_or(0..0);
        return Err(err(
            span,
            format!("dependency cycle: {}", cycle.join(" -> ")),
            Some("remove one of these `depends_on` entries".into()),
        ));
    }
    let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Config {
        path: path.to_path_buf(),
        root,
        services,
    })
}

/// A cycle in `depends_on`, as names from a service back to itself.
fn find_cycle(services: &BTreeMap<String, Service>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        name: &str,
        services: &BTreeMap<String, Service>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(name) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let from = stack.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(name.to_string(), Mark::Visiting);
        stack.push(name.to_string());
        for dep in &services[name].depends_on {
            if let Some(cycle) = visit(dep, services, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(name.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    services
        .keys()
        .find_map(|name| visit(name, services, &mut marks, &mut Vec::new()))
}

impl Config {
    /// `wanted` and everything they depend on, in start order (dependencies first). Empty means all.
    pub fn start_order(&self, wanted: &[String]) -> Result<Vec<&Service>, String> {
        for w in wanted {
            if !self.services.contains_key(w) {
                let hint = did_you_mean(w, self.services.keys().map(String::as_str))
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "no service `{w}` in {}{hint}; services: {}",
                    self.path.display(),
                    self.services.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let roots: Vec<&String> = if wanted.is_empty() {
            self.services.keys().collect()
        } else {
            wanted.iter().collect()
        };
        let mut order: Vec<&Service> = Vec::new();
        fn add<'a>(name: &str, config: &'a Config, order: &mut Vec<&'a Service>) {
            if order.iter().any(|s| s.name == name) {
                return;
            }
            let service = &config.services[name];
            for dep in &service.depends_on {
                add(dep, config, order);
            }
            order.push(service);
        }
        for r in roots {
            add(r, self, &mut order);
        }
        Ok(order)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    defaults: Option<RawDefaults>,
    #[serde(default)]
    services: BTreeMap<Spanned<String>, Spanned<RawService>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    build: Option<Spanned<Vec<String>>>,
    health: Option<Health>,
    replicas: Option<u32>,
    env: Option<BTreeMap<String, String>>,
    restart: Option<RestartPolicy>,
    stop_timeout: Option<Spanned<Seconds>>,
    start_timeout: Option<Spanned<Seconds>>,
    health_interval: Option<Spanned<Seconds>>,
    unhealthy_after: Option<Spanned<u32>>,
    max_restarts: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    command: Option<Spanned<Vec<String>>>,
    build: Option<Spanned<Vec<String>>>,
    health: Option<Health>,
    port: Option<Spanned<Port>>,
    replicas: Option<Spanned<u32>>,
    depends_on: Option<Vec<Spanned<String>>>,
    env: Option<BTreeMap<String, String>>,
    restart: Option<RestartPolicy>,
    stop_timeout: Option<Spanned<Seconds>>,
    start_timeout: Option<Spanned<Seconds>>,
    health_interval: Option<Spanned<Seconds>>,
    unhealthy_after: Option<Spanned<u32>>,
    max_restarts: Option<u32>,
}

/// A default duration as a user writes it: `500ms`, `5s`.
fn humanish(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A duration written as `"5s"`, `"250ms"`, `"2m"`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seconds(Duration);

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration such as \"500ms\", \"5s\" or \"2m\", or a number of seconds",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|s| Seconds(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Duration::try_from_secs_f64(v)
                    .map(Seconds)
                    .map_err(|_| E::custom("a duration must be a positive number of seconds"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                parse_duration(v).map(Seconds).ok_or_else(|| {
                    E::custom(format!(
                        "`{v}` is not a duration; write it as \"500ms\", \"5s\" or \"2m\""
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\" or a port number from 1 to 65535")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(Port::Fixed(p)),
                    _ => Err(E::custom(format!(
                        "port {v} is out of range; use 1 to 65535 or \"auto\""
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                match v {
                    "auto" => Ok(Port::Auto),
                    _ => Err(E::custom(format!(
                        "port `{v}` is not valid; use \"auto\" or a number"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Health {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "tcp" => Ok(Health::Tcp),
            "none" => Ok(Health::None),
            p if p.starts_with('/') => Ok(Health::Http(p.to_string())),
            other => Err(de::Error::custom(format!(
                "health `{other}` is not valid; use an HTTP path such as \"/health\", \"tcp\" or \"none\""
            ))),
        }
    }
}

/// Expands `${NAME}` and `${NAME:-default}` from `lookup`, as docker compose does in its files.
pub fn expand_vars(s: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`{s}` has an unclosed `${{`"))?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "`{s}` uses ${{{name}}}, which is not set; set it or write ${{{name}:-default}}"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Config {
    /// Service names grouped for stopping: the first group depends on nothing left running.
    pub fn stop_levels(&self) -> Vec<Vec<String>> {
        fn depth(name: &str, config: &Config, memo: &mut BTreeMap<String, usize>) -> usize {
            if let Some(d) = memo.get(name) {
                return *d;
            }
            let d = config.services[name]
                .depends_on
                .iter()
                .map(|dep| depth(dep, config, memo) + 1)
                .max()
                .unwrap_or(0);
            memo.insert(name.to_string(), d);
            d
        }
        let mut memo = BTreeMap::new();
        let mut levels: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for name in self.services.keys() {
            levels
                .entry(depth(name, self, &mut memo))
                .or_default()
                .push(name.clone());
        }
        levels.into_values().rev().collect()
    }
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
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5 parsecs"), None);
        let env = |k: &str| (k == "T").then(|| "/t".to_string());
        assert_eq!(expand_vars("${T}/debug/x", env).unwrap(), "/t/debug/x");
        assert_eq!(
            expand_vars("${U:-target}/debug/x", env).unwrap(),
            "target/debug/x"
        );
        assert!(expand_vars("${U}/x", env).unwrap_err().contains("${U}"));
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
