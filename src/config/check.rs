//! Checking a parsed msctl.toml: defaults merged into each service, and every value checked,
//! each failure located in the file.

use super::error::{ConfigError, did_you_mean};
use super::graph::find_cycle;
use super::raw::{RawManifest, Seconds};
use super::{Config, Health, Port, RestartPolicy, Service};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// A service name: used in file names, URL prefixes and variable names, so kept plain.
pub fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 40
        && !name.ends_with('-')
}

/// Whether `name` has the form of an instance id of the service `of` (`users-2` of `users`):
/// commands that take a service or an instance could not tell the two apart.
pub fn looks_like_instance(name: &str, of: &str) -> bool {
    name.strip_prefix(of)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|n| n.parse::<u32>().is_ok_and(|i| i.to_string() == n))
}

pub(super) fn check(
    path: &Path,
    text: &str,
    raw: RawManifest,
    allow_empty: bool,
) -> Result<Config, ConfigError> {
    let err = |span: Range<usize>, msg: String, hint: Option<String>| {
        ConfigError::at(path, text, span, msg, hint)
    };
    let defaults = raw.defaults.unwrap_or_default();
    let names: BTreeSet<String> = raw.services.keys().map(|k| k.get_ref().clone()).collect();
    let mut services = BTreeMap::new();
    let mut fixed_ports: BTreeMap<u16, String> = BTreeMap::new();
    if raw.services.is_empty() && !allow_empty {
        return Err(err(
            0..0,
            "no services: msctl.toml has no [services.NAME] table".into(),
            Some("`msctl scaffold NAME` adds one; or write one, such as\n  [services.web]\n  command = [\"path/to/program\"]".into()),
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
    // Watched paths stay inside the project: watch mode must not follow `..` out of it.
    let watch_path = |service: &str, p: &Spanned<String>| {
        let text = p.get_ref().trim();
        let path = Path::new(text);
        if text.is_empty()
            || path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(err(
                p.span(),
                format!(
                    "`watch` of service `{service}` names `{text}`, which is not a folder or file inside the project"
                ),
                Some(
                    "give paths relative to msctl.toml's folder, such as \"services/users\"".into(),
                ),
            ));
        }
        Ok(text.trim_end_matches('/').to_string())
    };
    let watch_glob = |g: &Spanned<String>| {
        globset::Glob::new(g.get_ref())
            .map(|_| g.get_ref().clone())
            .map_err(|e| {
                err(
                    g.span(),
                    format!(
                        "`watch_ignore` has a pattern that is not a glob: {}",
                        e.kind()
                    ),
                    Some("write globs such as \"*.md\" or \"services/users/fixtures/**\"".into()),
                )
            })
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
        if let Some(other) = names.iter().find(|other| looks_like_instance(&name, other)) {
            return Err(err(
                span,
                format!(
                    "service name `{name}` is the id of an instance of `{other}` (its instances are {other}-1, {other}-2, …): `msctl logs {name}` and the like could not tell them apart"
                ),
                Some(format!(
                    "rename it so that it does not end in a dash and a number, such as `{other}-admin`"
                )),
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
            Some(c) => {
                if let Some(word) = c
                    .get_ref()
                    .iter()
                    .flat_map(|a| super::unknown_placeholders(a))
                    .next()
                {
                    return Err(err(
                        c.span(),
                        format!(
                            "the command of service `{name}` has an unknown placeholder `{{{word}}}`"
                        ),
                        Some(format!(
                            "msctl fills in {}",
                            super::PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                        )),
                    ));
                }
                c.get_ref().clone()
            }
        };
        let build = s.build.as_ref().or(defaults.build.as_ref());
        if let Some(b) = build.filter(|b| {
            b.get_ref().first().is_some_and(|p| p.trim().is_empty())
                || (b.get_ref().is_empty() && s.build.is_none())
        }) {
            return Err(err(
                b.span(),
                format!("the build command of service `{name}` is empty"),
                Some("remove `build`, or give the program to run".into()),
            ));
        }
        // `build = []` in a service's own table: nothing to build (a program installed on the
        // machine), whatever `[defaults]` says.
        let build = build.filter(|b| !b.get_ref().is_empty());
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
        if replicas.0 > msctl_contract::control::MAX_REPLICAS {
            return Err(err(
                replicas.1,
                format!(
                    "service `{name}` asks for {} replicas; msctl runs at most {} instances of one service",
                    replicas.0,
                    msctl_contract::control::MAX_REPLICAS
                ),
                Some(format!(
                    "lower `replicas` to {} or fewer",
                    msctl_contract::control::MAX_REPLICAS
                )),
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
        let env_files = match s.env_file.as_ref().or(defaults.env_file.as_ref()) {
            Some(files) => {
                if let Some(bad) = files.get_ref().0.iter().find(|f| f.trim().is_empty()) {
                    return Err(err(
                        files.span(),
                        format!("`env_file` of service `{name}` has an empty file name `{bad}`"),
                        Some(
                            "give paths relative to msctl.toml's folder, such as \".env.users\""
                                .into(),
                        ),
                    ));
                }
                files.get_ref().0.clone()
            }
            None => Vec::new(),
        };
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
            env_files,
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
            optional: s.optional.unwrap_or(false),
            profiles: match &s.profiles {
                Some(profiles) => {
                    if let Some(bad) = profiles.iter().find(|p| !valid_service_name(p.get_ref())) {
                        return Err(err(
                            bad.span(),
                            format!("profile name `{}` is not allowed", bad.get_ref()),
                            Some(
                                "use lowercase letters, digits and dashes, starting with a letter"
                                    .into(),
                            ),
                        ));
                    }
                    profiles.iter().map(|p| p.get_ref().clone()).collect()
                }
                None => Vec::new(),
            },
            job: match &s.job {
                Some(job) if *job.get_ref() && s.health.is_some() => {
                    return Err(err(
                        job.span(),
                        format!(
                            "service `{name}` is a job and has a `health`: a job is ready when it exits 0, and is never checked"
                        ),
                        Some("remove `health`, or `job`".into()),
                    ));
                }
                Some(job) => *job.get_ref(),
                None => false,
            },
            install: s.install.clone(),
            image: s.image.clone(),
            kubernetes: s.kubernetes.clone().unwrap_or_default(),
            watch: match &s.watch {
                Some(paths) => Some(
                    paths
                        .iter()
                        .map(|p| watch_path(&name, p))
                        .collect::<Result<_, _>>()?,
                ),
                None => None,
            },
            watch_ignore: defaults
                .watch_ignore
                .iter()
                .chain(&s.watch_ignore)
                .flatten()
                .map(&watch_glob)
                .collect::<Result<_, _>>()?,
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

/// A default duration as a user writes it: `500ms`, `5s`.
fn humanish(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
