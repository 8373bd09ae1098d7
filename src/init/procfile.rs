//! Procfile import: each process type becomes a service, as foreman and honcho run them. A
//! command that mentions `$PORT` listens there and is health-checked by connecting; one that
//! does not is a worker with no health check. `web=2` concurrency becomes replicas.

use super::{Draft, Found, Skipped, service_name};

/// Characters that make a command need a shell; `$PORT` alone does not, it becomes `{port}`.
const SHELL: [char; 16] = [
    '|', '&', ';', '<', '>', '(', ')', '`', '*', '?', '[', ']', '{', '}', '~', '$',
];

/// The services of a Procfile's `text`; `concurrency` is `(process type, count)` as given to
/// `--concurrency web=2`.
pub fn import(text: &str, concurrency: &[(String, u32)]) -> Found {
    let mut found = Found {
        source: "Procfile".into(),
        ..Found::default()
    };
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((kind, command)) = line.split_once(':') else {
            found.unmapped.push(format!(
                "Procfile line {}: `{line}` is not `type: command`",
                number + 1
            ));
            continue;
        };
        let (kind, command) = (kind.trim(), command.trim());
        if kind == "release" {
            found.skipped.push(Skipped {
                name: kind.into(),
                why: "a release-phase command, run once per deploy, not a process".into(),
                suggestion: format!(
                    "run `{command}` yourself, or make it part of a service's `build`"
                ),
                table: None,
            });
            continue;
        }
        let Some(name) = service_name(kind) else {
            found.unmapped.push(format!(
                "Procfile line {}: `{kind}` cannot be a service name (lowercase letters, digits, dashes, starting with a letter)",
                number + 1
            ));
            continue;
        };
        let listens = ["$PORT", "${PORT}"].iter().any(|p| command.contains(p));
        let mut d = Draft::new(&name, argv(command));
        d.notes.push(format!("Procfile: {kind}: {command}"));
        if name != kind {
            d.notes.push(format!(
                "named `{name}`: msctl names are lowercase with dashes"
            ));
        }
        if listens {
            d.health = "tcp".into();
            d.notes
                .push("listens on $PORT: health is a connection to it".into());
        } else {
            d.health = "none".into();
            d.notes.push(
                "check: it does not mention $PORT, so it is taken for a worker with no health check"
                    .into(),
            );
        }
        if let Some((_, n)) = concurrency.iter().find(|(k, _)| k == kind) {
            d.set_replicas(u64::from(*n), &format!("--concurrency {kind}={n}"));
        }
        found.services.push(d);
    }
    for (kind, _) in concurrency {
        if !found.services.iter().any(|s| {
            s.notes
                .first()
                .is_some_and(|n| n.starts_with(&format!("Procfile: {kind}:")))
        }) {
            found.unmapped.push(format!(
                "--concurrency {kind}=…: no process type `{kind}` in the Procfile"
            ));
        }
    }
    found
}

/// When processes run binaries of the Cargo project at `root` (`target/debug/NAME`), one
/// shared `cargo build` before they start, as the Procfile assumed someone ran.
pub fn add_cargo_build(found: &mut Found, root: &std::path::Path) {
    if !root.join("Cargo.toml").is_file() {
        return;
    }
    let program = |s: &super::Draft| {
        let p = s.command.first().cloned().unwrap_or_default();
        p.strip_prefix("./").map(str::to_string).unwrap_or(p)
    };
    let release = found
        .services
        .iter()
        .any(|s| program(s).starts_with("target/release/"));
    let debug = found
        .services
        .iter()
        .any(|s| program(s).starts_with("target/debug/"));
    if !release && !debug {
        return;
    }
    let mut build = vec![
        "cargo".to_string(),
        "build".to_string(),
        "--bins".to_string(),
    ];
    if release {
        build.push("--release".into());
    }
    found.build = Some((
        build,
        "the Procfile runs binaries of this Cargo project: one build before they start".into(),
    ));
}

/// The command as an argv, with `$PORT` as msctl's `{port}`; through `sh -c` when it needs a
/// shell (pipes, `&&`, other variables), as foreman would run it.
fn argv(command: &str) -> Vec<String> {
    let plain = command
        .replace("${PORT}", "")
        .replace("$PORT", "")
        .chars()
        .all(|c| !SHELL.contains(&c));
    let assignment = command
        .split_whitespace()
        .next()
        .is_some_and(|w| w.contains('='));
    if plain
        && !assignment
        && let Some(words) = shlex::split(command)
        && !words.is_empty()
    {
        return words
            .into_iter()
            .map(|w| w.replace("${PORT}", "{port}").replace("$PORT", "{port}"))
            .collect();
    }
    vec!["sh".into(), "-c".into(), command.to_string()]
}

/// `web=2,worker=1` as `--concurrency` takes it.
pub fn parse_concurrency(s: &str) -> Result<Vec<(String, u32)>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (kind, n) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not TYPE=N, such as web=2"))?;
            let n: u32 = n
                .trim()
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("`{pair}`: N is a count of at least 1"))?;
            Ok((kind.trim().to_string(), n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_types_become_services() {
        let found = import(
            "# the app\nweb: python3 -m http.server ${PORT}\nworker: bin/worker --queue default\nrelease: ./migrate\nclock: sh -c 'sleep 5; echo tick' | tee -a clock.log\nBad_Name: x\n",
            &[("web".into(), 2)],
        );
        let names: Vec<&str> = found.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web", "worker", "clock", "bad-name"]);
        let web = &found.services[0];
        assert_eq!(web.command, ["python3", "-m", "http.server", "{port}"]);
        assert_eq!((web.health.as_str(), web.replicas), ("tcp", 2));
        let worker = &found.services[1];
        assert_eq!(worker.command, ["bin/worker", "--queue", "default"]);
        assert_eq!(worker.health, "none");
        assert_eq!(found.services[2].command[..2], ["sh", "-c"]);
        assert_eq!(found.skipped[0].name, "release");
        let text = super::super::render(&found);
        let config = crate::config::parse(std::path::Path::new("/p/msctl.toml"), &text)
            .unwrap_or_else(|e| panic!("{}\n{text}", e.message));
        assert_eq!(config.services["web"].replicas, 2);
    }

    #[test]
    fn a_concurrency_past_what_msctl_runs_is_lowered_and_said() {
        let found = import("web: serve --port $PORT\n", &[("web".into(), 1000)]);
        let web = &found.services[0];
        assert_eq!(web.replicas, msctl_contract::control::MAX_REPLICAS);
        assert!(
            web.notes
                .iter()
                .any(|n| n.starts_with("--concurrency web=1000: msctl runs at most 64")),
            "{:?}",
            web.notes
        );
        let text = super::super::render(&found);
        let config = crate::config::parse(std::path::Path::new("/p/msctl.toml"), &text)
            .unwrap_or_else(|e| panic!("{}\n{text}", e.message));
        assert_eq!(config.services["web"].replicas, 64);
    }

    #[test]
    fn variables_other_than_port_go_through_a_shell() {
        assert_eq!(argv("node app.js --db $DATABASE_URL")[..2], ["sh", "-c"]);
        assert_eq!(argv("RACK_ENV=dev bundle exec puma")[..2], ["sh", "-c"]);
        assert_eq!(
            argv("gunicorn -b 127.0.0.1:$PORT app:app")[2],
            "127.0.0.1:{port}"
        );
    }

    #[test]
    fn concurrency_is_checked() {
        assert_eq!(
            parse_concurrency("web=2,worker=1").unwrap(),
            [("web".to_string(), 2), ("worker".to_string(), 1)]
        );
        assert!(parse_concurrency("web").unwrap_err().contains("TYPE=N"));
        assert!(
            parse_concurrency("web=0")
                .unwrap_err()
                .contains("at least 1")
        );
        let found = import("web: x $PORT\n", &[("wbe".into(), 2)]);
        assert!(found.unmapped[0].contains("no process type `wbe`"));
    }
}
