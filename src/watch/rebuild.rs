//! Rebuilding what a change affects: one `cargo build -p …` for the Cargo packages (the
//! services' own build command, narrowed from the workspace to those packages), each other
//! service's own build command once, and the compiler's first error when a build fails.

use crate::config::{Service, expand_vars};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// One build to run, and the services it builds.
#[derive(Debug, Clone, PartialEq)]
pub struct Build {
    pub argv: Vec<String>,
    pub services: Vec<String>,
}

/// The builds for `services`, each given with its Cargo package when it has one. Cargo services
/// whose build commands differ only in which packages they select share one build; a service
/// with no build command needs none (it is only replaced).
pub fn plan(services: &[(&Service, Option<&str>)]) -> Vec<Build> {
    let mut builds: Vec<(Build, Vec<String>)> = Vec::new();
    for (service, package) in services {
        let Some(argv) = &service.build else {
            continue;
        };
        let (base, package) = match package {
            Some(p) if is_cargo_build(argv) => (without_selection(argv), Some(p.to_string())),
            _ => (argv.clone(), None),
        };
        match builds.iter_mut().find(|(b, _)| b.argv == base) {
            Some((build, packages)) => {
                build.services.push(service.name.clone());
                packages.extend(package);
            }
            None => builds.push((
                Build {
                    argv: base,
                    services: vec![service.name.clone()],
                },
                package.into_iter().collect(),
            )),
        }
    }
    builds
        .into_iter()
        .map(|(mut build, mut packages)| {
            packages.sort();
            packages.dedup();
            for p in packages {
                build.argv.push("-p".into());
                build.argv.push(p);
            }
            build
        })
        .collect()
}

fn is_cargo_build(argv: &[String]) -> bool {
    argv.first()
        .and_then(|p| Path::new(p).file_name())
        .is_some_and(|n| n == "cargo")
        && argv.get(1).is_some_and(|a| a == "build" || a == "b")
}

/// A cargo build command without what selects packages (`--workspace`, `--exclude X`, `-p X`):
/// the packages to build are given afterwards.
fn without_selection(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = argv.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--workspace" | "--all" => {}
            "--exclude" | "-p" | "--package" => {
                args.next();
            }
            _ if a.starts_with("--exclude=") || a.starts_with("--package=") => {}
            _ if a.starts_with("-p") && a.len() > 2 => {}
            _ => out.push(a.clone()),
        }
    }
    out
}

/// Runs `build` in `root`, its output appended to `log`; how long it took, or the compiler's
/// first error (or the end of the output when there is no compiler error to show).
pub async fn run(root: &Path, build: &Build, log: &Path) -> Result<Duration, String> {
    let argv: Vec<String> = build
        .argv
        .iter()
        .map(|a| expand_vars(a, |k| std::env::var(k).ok()))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut command = tokio::process::Command::new(&argv[0]);
    crate::supervisor::process::forget_cargo_run(&mut command);
    command
        .args(&argv[1..])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // A group of its own, stopped whole when watching ends mid-build (`msctl down`, `watch
    // --off`, a signal): killing cargo alone leaves its rustc running, orphaned.
    #[cfg(unix)]
    {
        command.process_group(0);
        crate::supervisor::process::die_with_parent(&mut command);
    }
    let child = command
        .spawn()
        .map_err(|e| format!("could not run `{}`: {e}", argv.join(" ")))?;
    let mut group = GroupGuard(child.id());
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| format!("could not run `{}`: {e}", argv.join(" ")))?;
    group.0 = None;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if let Ok(mut file) = msctl_contract::fs::open_private(log, true) {
        use std::io::Write;
        let _ = writeln!(file, "$ {}\n{text}", argv.join(" "));
    }
    if output.status.success() {
        return Ok(started.elapsed());
    }
    Err(first_error(&text).unwrap_or_else(|| {
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let shown = format!(
            "`{}` {}",
            argv.join(" "),
            crate::supervisor::process::describe_exit(&output.status)
        );
        if tail.is_empty() {
            shown
        } else {
            format!("{shown}: {}", tail.join(" / "))
        }
    }))
}

/// A running build's process group, killed with everything in it if the build is dropped
/// before it ends.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0 {
            crate::supervisor::process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The first compiler error in cargo's output, as `FILE:LINE:COL: error[CODE]: MESSAGE`.
pub fn first_error(output: &str) -> Option<String> {
    let lines: Vec<&str> = output.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("error") && !l.starts_with("error: could not compile"))?;
    let message = lines[start].trim();
    let location = lines[start + 1..]
        .iter()
        .take(4)
        .find_map(|l| l.trim_start().strip_prefix("--> "))
        .map(str::trim);
    Some(match location {
        Some(at) => format!("{at}: {message}"),
        None => message.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn service(name: &str, build: Option<&[&str]>) -> Service {
        let mut s = crate::config::parse(
            Path::new("/p/msctl.toml"),
            &format!("[services.{name}]\ncommand = [\"x\"]\n"),
        )
        .unwrap()
        .services
        .remove(name)
        .unwrap();
        s.build = build.map(|b| b.iter().map(|a| a.to_string()).collect());
        s
    }

    #[test]
    fn cargo_services_share_one_narrowed_build() {
        let workspace: &[&str] = &[
            "cargo",
            "build",
            "--workspace",
            "--bins",
            "--exclude",
            "msctl",
            "--release",
        ];
        let users = service("users", Some(workspace));
        let posts = service("posts", Some(workspace));
        let node = service("web", Some(&["npm", "run", "build"]));
        let plain = service("plain", None);
        let builds = plan(&[
            (&users, Some("users")),
            (&node, None),
            (&posts, Some("posts")),
            (&plain, None),
        ]);
        assert_eq!(
            builds,
            [
                Build {
                    argv: [
                        "cargo",
                        "build",
                        "--bins",
                        "--release",
                        "-p",
                        "posts",
                        "-p",
                        "users"
                    ]
                    .map(String::from)
                    .to_vec(),
                    services: vec!["users".into(), "posts".into()],
                },
                Build {
                    argv: ["npm", "run", "build"].map(String::from).to_vec(),
                    services: vec!["web".into()],
                },
            ]
        );
    }

    #[test]
    fn the_first_error_names_file_and_line() {
        let output = "   Compiling users v0.1.0 (/p/services/users)
warning: unused variable: `x`
 --> services/users/src/lib.rs:3:9
error[E0308]: mismatched types
  --> services/users/src/lib.rs:42:5
   |
42 |     \"oops\"
   |     ^^^^^^ expected `u32`, found `&str`

error[E0425]: cannot find value `y` in this scope
  --> services/users/src/lib.rs:50:1
error: could not compile `users` (lib) due to 2 previous errors
";
        assert_eq!(
            first_error(output).as_deref(),
            Some("services/users/src/lib.rs:42:5: error[E0308]: mismatched types")
        );
        assert_eq!(
            first_error("error: expected one of `,` or `}`\n --> a.rs:1:2\n").as_deref(),
            Some("a.rs:1:2: error: expected one of `,` or `}`")
        );
        assert_eq!(first_error("Finished\n"), None);
        assert_eq!(
            first_error("error: could not compile `x`\n"),
            None,
            "the summary line is not the error"
        );
    }
}
