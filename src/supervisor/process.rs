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
    cwd: &Path,
) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        cmd.process_group(0);
        die_with_parent(&mut cmd);
    }
    cmd.spawn()
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
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
fn die_with_parent(_: &mut tokio::process::Command) {}

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

/// Whether `pid` is still the instance `instance` that msctl started for the registry at
/// `registry`, and not an unrelated process that reused the pid.
pub fn is_instance(pid: u32, instance: &str, registry: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return false;
        };
        let want_id = format!("MSCTL_INSTANCE={instance}");
        let want_reg = format!("MSCTL_REGISTRY={}", registry.display());
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        vars.contains(&want_id.as_bytes()) && vars.contains(&want_reg.as_bytes())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (instance, registry);
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
            .is_ok_and(|g| g.as_raw() as u32 == pid)
    }
}

/// Every process on the machine, with its folder under /proc.
#[cfg(target_os = "linux")]
pub fn all_processes() -> Vec<(u32, std::path::PathBuf)> {
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .flatten()
        .filter_map(|entry| {
            Some((
                entry.file_name().to_str()?.parse::<u32>().ok()?,
                entry.path(),
            ))
        })
        .collect()
}

/// Every process started for the registry at `registry`, found by the `MSCTL_REGISTRY` their
/// environment inherited: instances and whatever they started in turn, even once their parent is
/// gone. Each comes with its `MSCTL_INSTANCE`.
#[cfg(target_os = "linux")]
pub fn started_for(registry: &Path) -> Vec<(u32, String)> {
    let want_reg = format!("MSCTL_REGISTRY={}", registry.display());
    let mut found = Vec::new();
    for (pid, dir) in all_processes() {
        let Ok(environ) = std::fs::read(dir.join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if pid != std::process::id() && vars.contains(&want_reg.as_bytes()) && alive(pid) {
            let instance = vars
                .iter()
                .find_map(|v| v.strip_prefix(b"MSCTL_INSTANCE="))
                .map(|v| String::from_utf8_lossy(v).to_string())
                .unwrap_or_default();
            found.push((pid, instance));
        }
    }
    found
}

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
