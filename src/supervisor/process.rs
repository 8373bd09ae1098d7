//! Child processes: each in its own process group, killed with its parent, stopped as a group.

use std::path::Path;
use std::process::{ExitStatus, Stdio};

/// Starts `program` in a process group of its own, with stdout and stderr piped to us.
///
/// On Linux the child also gets a parent-death signal, so that even a SIGKILL of msctl leaves
/// no service running. The kernel sends it when the *thread* that forked exits, which is why
/// msctl runs its supervisor on a single-threaded runtime: the forking thread is the main one.
pub fn spawn(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    unset: &[&str],
    cwd: &Path,
) -> std::io::Result<tokio::process::Child> {
    let mut cmd = command(program, args, env, unset, cwd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    cmd.process_group(0);
    cmd.spawn()
}

/// `program` with `args`, in `cwd`, with msctl's environment less what `cargo run` gave it and
/// `unset`, plus `env`, and the open-file limit msctl started with; killed with msctl. What an
/// instance and a `msctl run` command have in common.
pub fn command(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    unset: &[&str],
    cwd: &Path,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    forget_cargo_run(&mut cmd);
    for name in unset {
        cmd.env_remove(name);
    }
    cmd.env_remove(crate::limits::ORIGINAL_ENV);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd);
    die_with_parent(&mut cmd);
    cmd
}

/// Leaves out of `cmd`'s environment what `cargo run` gave msctl itself (`cargo run -- up`, the
/// README's quick start): its package's `CARGO_PKG_*` and `CARGO_MANIFEST_*`. A build that saw
/// them would differ from one started from a shell, and Cargo rebuilds crates whose build
/// scripts read them (ring, and what depends on it) every time builds alternate between the two.
pub fn forget_cargo_run(cmd: &mut tokio::process::Command) {
    for name in cargo_run_vars() {
        cmd.env_remove(name);
    }
}

/// The variables of [`forget_cargo_run`]: none unless msctl was started by `cargo run`.
fn cargo_run_vars() -> &'static [String] {
    static VARS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    VARS.get_or_init(|| {
        let ran_by_cargo = std::env::var("CARGO_PKG_NAME")
            .is_ok_and(|n| n == env!("CARGO_PKG_NAME"))
            && std::env::var_os("CARGO_MANIFEST_DIR").is_some();
        if !ran_by_cargo {
            return Vec::new();
        }
        std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|n| {
                n.starts_with("CARGO_PKG_")
                    || n.starts_with("CARGO_MANIFEST_")
                    || matches!(
                        n.as_str(),
                        "CARGO_PRIMARY_PACKAGE" | "CARGO_CRATE_NAME" | "CARGO_BIN_NAME"
                    )
            })
            .collect()
    })
}

#[cfg(target_os = "linux")]
pub fn die_with_parent(cmd: &mut tokio::process::Command) {
    let parent = nix::unistd::getpid();
    let nofile = crate::limits::original();
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (prctl, getppid, getrlimit, setrlimit).
    unsafe {
        cmd.pre_exec(move || {
            if let Some(original) = nofile {
                crate::limits::restore_in_child(original)?;
            }
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The parent may have died before the line above took effect; failing here fails
            // the spawn instead of leaving an orphan.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other(
                    "msctl exited while starting the service",
                ));
            }
            Ok(())
        });
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
pub fn die_with_parent(_: &mut tokio::process::Command) {}

/// SIGKILLs each of `pids`; how many were there to kill.
#[cfg(unix)]
pub fn kill_all(pids: impl IntoIterator<Item = u32>) -> usize {
    pids.into_iter()
        .filter(|pid| {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
        })
        .count()
}

/// Sends `signal` to the whole process group led by `pid`. A group that is gone already is fine.
#[cfg(unix)]
pub fn signal_group(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// Whether a process with this pid exists (and is not a zombie we could reap).
#[cfg(unix)]
pub fn alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    #[cfg(target_os = "linux")]
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: Z is a zombie, X dead.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        return !matches!(state, Some('Z') | Some('X'));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// One process as /proc shows it: the one place msctl reads another process's environment
/// and command line (Linux only).
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
}

impl Proc {
    /// Its environment, one `NAME=value` a string; empty when it cannot be read.
    pub fn environ(&self) -> Vec<String> {
        self.read_nul_separated("environ")
    }

    /// Its command line, one argument a string.
    pub fn cmdline(&self) -> Vec<String> {
        self.read_nul_separated("cmdline")
    }

    /// The socket inodes among its open files (`socket:[123]`).
    pub fn sockets(&self) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|target| {
                let target = target.to_string_lossy().into_owned();
                Some(
                    target
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .to_string(),
                )
            })
            .collect()
    }

    /// Its short command name.
    pub fn name(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/comm", self.pid))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The value of `name` in its environment.
    pub fn env(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        self.environ()
            .into_iter()
            .find_map(|v| v.strip_prefix(&prefix).map(str::to_string))
    }

    fn read_nul_separated(&self, file: &str) -> Vec<String> {
        std::fs::read(format!("/proc/{}/{file}", self.pid))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect()
    }
}

/// Every live process on the machine, this one included.
pub fn scan() -> impl Iterator<Item = Proc> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid))
        .map(|pid| Proc { pid })
}

/// Whether `pid` is still the instance `instance` that msctl started for the registry at
/// `registry`, and not an unrelated process that reused the pid.
pub fn is_instance(pid: u32, instance: &str, registry: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        let p = Proc { pid };
        p.env(msctl_contract::env::INSTANCE).as_deref() == Some(instance)
            && p.env(msctl_contract::env::REGISTRY).as_deref() == registry.to_str()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (instance, registry);
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
            .is_ok_and(|g| g.as_raw() as u32 == pid)
    }
}

/// Every process started for the registry at `registry`, found by the `MSCTL_REGISTRY` their
/// environment inherited: instances and whatever they started in turn, even once their parent is
/// gone. Each comes with its `MSCTL_INSTANCE`. A `msctl run` command (`<service>-run`) is the
/// user's, in their terminal, and is left out: it ends when they end it.
#[cfg(target_os = "linux")]
pub fn started_for(registry: &Path) -> Vec<(u32, String)> {
    scan()
        .filter(|p| p.pid != std::process::id())
        .filter(|p| p.env(msctl_contract::env::REGISTRY).as_deref() == registry.to_str())
        .map(|p| {
            let instance = p.env(msctl_contract::env::INSTANCE).unwrap_or_default();
            (p.pid, instance)
        })
        .filter(|(_, instance)| !instance.ends_with(RUN_SUFFIX))
        .collect()
}

/// SIGKILLs what was started for the registry at `registry` (of one `instance`, or of all) and
/// is still running; how many. Nothing where there is no /proc to look in.
pub fn kill_left_behind(registry: &Path, instance: Option<&str>) -> usize {
    #[cfg(target_os = "linux")]
    {
        let left = started_for(registry)
            .into_iter()
            .filter(|(_, id)| instance.is_none_or(|i| i == id))
            .map(|(pid, _)| pid);
        kill_all(left)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (registry, instance);
        0
    }
}

/// What ends the `MSCTL_INSTANCE` of a `msctl run` command: `users-run`. No instance's id ends
/// so, since instance ids end in a number.
pub const RUN_SUFFIX: &str = "-run";

/// Words for how a process ended: `exited with code 1`, `killed by SIGSEGV`.
pub fn describe_exit(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = nix::sys::signal::Signal::try_from(sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| sig.to_string());
            return format!("killed by {name}");
        }
    }
    "exited".to_string()
}

/// What a process group (an instance and whatever it started) is using now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time, user and system, of its live processes since each started.
    pub cpu: std::time::Duration,
    /// Resident memory of its live processes, summed.
    pub rss_bytes: u64,
}

/// The usage of every process group on the machine, by group id (an instance's pid: each is
/// started as the leader of a group of its own). Empty where there is no /proc.
pub fn usage_by_group() -> std::collections::HashMap<u32, Usage> {
    let mut groups = std::collections::HashMap::new();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |t| t.max(1) as u64);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p.max(1) as u64);
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok());
    for pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((group, usage)) = parse_stat(&stat, ticks, page) {
            let sum: &mut Usage = groups.entry(group).or_default();
            sum.cpu += usage.cpu;
            sum.rss_bytes += usage.rss_bytes;
        }
    }
    groups
}

/// The process group and usage in one `/proc/PID/stat` line. The fields are counted after the
/// command name, which is in parentheses and may itself hold spaces and parentheses.
fn parse_stat(stat: &str, ticks_per_second: u64, page_size: u64) -> Option<(u32, Usage)> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state, ppid, pgrp, … utime (11), stime (12), … rss in pages (21).
    let group = fields.get(2)?.parse().ok()?;
    let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let ticks = number(11)? + number(12)?;
    Some((
        group,
        Usage {
            cpu: std::time::Duration::from_millis(ticks * 1000 / ticks_per_second),
            rss_bytes: number(21)? * page_size,
        },
    ))
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_group_cpu_and_memory() {
        // A command name with a space and a parenthesis in it, as /proc writes it.
        let stat = "4242 (my (odd) svc) S 1 4240 4240 0 -1 4194560 1200 0 0 0 250 50 0 0 20 0 3 0 99 123456789 3000 18446744073709551615";
        let (group, usage) = parse_stat(stat, 100, 4096).unwrap();
        assert_eq!(group, 4240);
        assert_eq!(usage.cpu, std::time::Duration::from_millis(3000));
        assert_eq!(usage.rss_bytes, 3000 * 4096);
        assert_eq!(parse_stat("4242 (cut", 100, 4096), None);
    }

    #[test]
    fn this_process_group_is_found_with_some_memory() {
        let me = nix::unistd::getpgrp().as_raw() as u32;
        let usage = usage_by_group().get(&me).copied().unwrap_or_default();
        assert!(usage.rss_bytes > 1024 * 1024, "{usage:?}");
    }
}
