//! `msctl config`: checks msctl.toml and prints it as msctl reads it, every service in start order with the defaults filled in.
//!
//! The TOML it prints is itself a valid msctl.toml that runs the same system here, as `docker
//! compose config` prints a compose file; `-q` makes it a check for CI, and `--json` is for
//! scripts.

use crate::cli::ConfigArgs;
use crate::cmd::Context;
use crate::config::{Health, Port, RestartPolicy, Service, expand_vars};
use crate::error::MsctlError;
use serde_json::{Value, json};

pub fn config(ctx: &Context, args: ConfigArgs) -> anyhow::Result<u8> {
    let (_, config) = ctx.load()?;
    let order = config.start_order(&[]).map_err(MsctlError::Usage)?;
    // A variable with no value and no default is not an error in the file, but the service
    // would not start as written: said whatever is printed, `-q` included.
    for service in &order {
        for arg in service
            .command
            .iter()
            .chain(service.build.iter().flatten())
            .chain(service.env.values())
        {
            if let Err(problem) = expand_vars(arg, |k| std::env::var(k).ok()) {
                say!(
                    "warning: service `{}`: {problem}; set it in the environment, or give a default as ${{NAME:-default}}",
                    service.name
                );
            }
        }
    }
    if args.quiet {
        return Ok(0);
    }
    if args.services {
        for service in &order {
            outln!("{}", service.name)?;
        }
        return Ok(0);
    }
    if args.json {
        let all: Vec<Value> = order.iter().map(|s| as_json(s)).collect();
        outln!("{}", serde_json::to_string_pretty(&all)?)?;
        return Ok(0);
    }
    let mut doc = toml_edit::DocumentMut::new();
    outln!("# {}, as msctl reads it", config.path.display())?;
    let mut services = toml_edit::Table::new();
    services.set_implicit(true);
    for service in &order {
        services.insert(&service.name, toml_edit::Item::Table(as_toml(service)));
    }
    doc.insert("services", toml_edit::Item::Table(services));
    crate::output::stdout_bytes(doc.to_string().as_bytes())?;
    Ok(0)
}

/// `arg` with `${VARS}` taken from the environment; as written when one cannot be.
fn expanded(arg: &str) -> String {
    expand_vars(arg, |k| std::env::var(k).ok()).unwrap_or_else(|_| arg.to_string())
}

fn health(h: &Health) -> String {
    match h {
        Health::Http(path) => path.clone(),
        Health::Tcp => "tcp".into(),
        Health::None => "none".into(),
    }
}

fn restart(r: RestartPolicy) -> &'static str {
    match r {
        RestartPolicy::No => "no",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Always => "always",
    }
}

fn duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Every setting of `s`, named as in msctl.toml; ones unset are null.
fn as_json(s: &Service) -> Value {
    let k = &s.kubernetes;
    json!({
        "name": s.name,
        "command": s.command.iter().map(|a| expanded(a)).collect::<Vec<_>>(),
        // Empty: no build step.
        "build": s.build.iter().flatten().map(|a| expanded(a)).collect::<Vec<_>>(),
        "port": match s.port { Port::Auto => json!("auto"), Port::Fixed(p) => json!(p) },
        "replicas": s.replicas,
        "health": health(&s.health),
        "depends_on": s.depends_on,
        "env": s.env.iter().map(|(k, v)| (k.clone(), expanded(v))).collect::<std::collections::BTreeMap<_, _>>(),
        "env_file": s.env_files,
        "restart": restart(s.restart),
        "start_timeout": duration(s.start_timeout),
        "stop_timeout": duration(s.stop_timeout),
        "health_interval": duration(s.health_interval),
        "unhealthy_after": s.unhealthy_after,
        "max_restarts": s.max_restarts,
        "watch": s.watch,
        "watch_ignore": s.watch_ignore,
        "optional": s.optional,
        "job": s.job,
        "profiles": s.profiles,
        "install": s.install,
        "image": s.image,
        "kubernetes": {
            "volume": k.volume, "cpu": k.cpu, "memory": k.memory,
            "cpu_limit": k.cpu_limit, "memory_limit": k.memory_limit,
        },
    })
}

/// `s` as a `[services.NAME]` table, keys in the order msctl.toml's documentation gives them;
/// settings that are unset or empty are left out, as they would be in a hand-written file.
fn as_toml(s: &Service) -> toml_edit::Table {
    use toml_edit::{Array, InlineTable, Table, value};
    let strings = |xs: &[String]| xs.iter().map(String::as_str).collect::<Array>();
    let mut t = Table::new();
    let command: Vec<String> = s.command.iter().map(|a| expanded(a)).collect();
    t.insert("command", value(strings(&command)));
    // An empty list says "no build", where leaving it out would take the defaults' again.
    let build: Vec<String> = s.build.iter().flatten().map(|a| expanded(a)).collect();
    t.insert("build", value(strings(&build)));
    if let Port::Fixed(p) = s.port {
        t.insert("port", value(i64::from(p)));
    }
    t.insert("replicas", value(i64::from(s.replicas)));
    // A job is never checked: a `health` beside `job` is refused.
    if s.job {
        t.insert("job", value(true));
    } else {
        t.insert("health", value(health(&s.health)));
    }
    if !s.depends_on.is_empty() {
        t.insert("depends_on", value(strings(&s.depends_on)));
    }
    if !s.env_files.is_empty() {
        t.insert("env_file", value(strings(&s.env_files)));
    }
    if !s.env.is_empty() {
        let mut env = InlineTable::new();
        for (name, v) in &s.env {
            env.insert(name, expanded(v).into());
        }
        t.insert("env", value(env));
    }
    t.insert("restart", value(restart(s.restart)));
    t.insert("start_timeout", value(duration(s.start_timeout)));
    t.insert("stop_timeout", value(duration(s.stop_timeout)));
    t.insert("health_interval", value(duration(s.health_interval)));
    t.insert("unhealthy_after", value(i64::from(s.unhealthy_after)));
    t.insert("max_restarts", value(i64::from(s.max_restarts)));
    if let Some(watch) = &s.watch {
        t.insert("watch", value(strings(watch)));
    }
    if !s.watch_ignore.is_empty() {
        t.insert("watch_ignore", value(strings(&s.watch_ignore)));
    }
    if s.optional {
        t.insert("optional", value(true));
    }
    if !s.profiles.is_empty() {
        t.insert("profiles", value(strings(&s.profiles)));
    }
    for (key, v) in [("install", &s.install), ("image", &s.image)] {
        if let Some(v) = v {
            t.insert(key, value(v.as_str()));
        }
    }
    let k = &s.kubernetes;
    let mut cluster = InlineTable::new();
    for (key, v) in [
        ("volume", &k.volume),
        ("cpu", &k.cpu),
        ("memory", &k.memory),
        ("cpu_limit", &k.cpu_limit),
        ("memory_limit", &k.memory_limit),
    ] {
        if let Some(v) = v {
            cluster.insert(key, v.as_str().into());
        }
    }
    if !cluster.is_empty() {
        t.insert("kubernetes", value(cluster));
    }
    t
}
