//! What every benchmark shares: building the binaries, an external health poller, process-group
//! cleanup, medians and the table.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The workspace root, where `cargo` is run.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is in the workspace")
        .to_path_buf()
}

/// Builds the release binaries the benchmarks run and returns their folder.
pub fn release_bins() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "msctl",
            "-p",
            "users",
            "-p",
            "posts",
            "-p",
            "gateway",
            "-p",
            "msctl-fixture",
            "-p",
            "msctl-bench",
            // Every binary of these packages; `--bin NAME` would narrow all of them to one.
            "--bins",
        ])
        .current_dir(root())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the release build failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    target.join("release")
}

/// Whether `addr` answers `GET /health` with a 2xx, over a fresh connection.
pub fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /health HTTP/1.0\r\nhost: x\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && head[9] == b'2'
}

/// Polls every address 1 ms apart until all are healthy; the time since `start`.
pub fn poll_all(addrs: &[SocketAddr], start: Instant, timeout: Duration) -> Option<Duration> {
    let mut pending: Vec<SocketAddr> = addrs.to_vec();
    while !pending.is_empty() {
        if start.elapsed() > timeout {
            return None;
        }
        pending.retain(|a| !healthy(*a));
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Some(start.elapsed())
}

/// Starts `cmd` as the leader of a new process group, so that everything it starts can be
/// stopped together.
pub fn spawn_group(cmd: &mut Command) -> Child {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0).spawn().expect("the runner starts")
}

/// SIGTERM, then SIGKILL after a grace period, to the whole group led by `child`.
pub fn stop_group(child: &mut Child) {
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

/// Marks every process one benchmark run starts, through an environment variable its children
/// inherit, and kills whatever still carries the mark when dropped, even after a panic. Runners
/// can leave children behind: honcho, stopped soon after start, dies and leaves them running.
pub struct Marked(String);

impl Marked {
    pub const VAR: &'static str = "MSCTL_BENCH_RUN";

    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Self(format!("{}-{nanos}", std::process::id()))
    }

    /// `cmd`, marked.
    pub fn mark<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env(Self::VAR, &self.0)
    }
}

/// Every process on the machine: its pid and its folder under /proc.
pub fn processes() -> impl Iterator<Item = (u32, PathBuf)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, entry.path()))
        })
}

impl Drop for Marked {
    fn drop(&mut self) {
        let needle = format!("{}={}", Self::VAR, self.0);
        for (pid, dir) in processes() {
            let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
            if environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Free loopback ports, distinct.
pub fn ports(n: usize) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::new();
    while out.len() < n {
        let p = portpicker::pick_unused_port().expect("a free port");
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A left-aligned table on stdout.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(headers.to_vec()));
    for row in rows {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// A Python tool from PyPI, installed once into a venv under target/.
pub fn python_tool(package: &str, program: &str) -> PathBuf {
    let venv = root().join("target/bench-venv");
    let bin = venv.join("bin").join(program);
    if !bin.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", package])
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "installing {package} from PyPI failed");
    }
    bin
}

/// Peak resident memory of `pid`, in KiB, from /proc.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Reads one HTTP/1.1 response with a content-length body; false when the connection failed.
pub fn read_response(reader: &mut BufReader<TcpStream>) -> bool {
    let mut line = String::new();
    let mut length = 0usize;
    let mut ok = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if line.starts_with("HTTP/1.1 ") {
            ok = line.as_bytes().get(9) == Some(&b'2');
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).is_ok() && ok
}

/// The sample system's msctl.toml on the release binaries in `bins`: users, posts, gateway.
pub fn sample_manifest(bins: &Path) -> String {
    let bin = |n: &str| bins.join(n).display().to_string();
    format!(
        "[services.users]\ncommand = [\"{}\"]\n\n[services.posts]\ncommand = [\"{}\"]\n\n[services.gateway]\ncommand = [\"{}\"]\ndepends_on = [\"users\", \"posts\"]\n",
        bin("users"),
        bin("posts"),
        bin("gateway")
    )
}

/// A system under the release msctl, from an msctl.toml, in a folder of its own; `msctl down`
/// when dropped.
pub struct Running {
    pub dir: tempfile::TempDir,
    pub msctl: PathBuf,
}

impl Running {
    /// `msctl up -d --no-build` on `manifest`; panics when it fails.
    pub fn up(bins: &Path, manifest: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("msctl.toml"), manifest).expect("manifest written");
        let msctl = bins.join("msctl");
        let ok = Command::new(&msctl)
            .args(["up", "-d", "--no-build"])
            .current_dir(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "msctl up failed");
        Self { dir, msctl }
    }

    /// The supervisor's pid and the pids of every instance.
    pub fn pids(&self) -> (u32, Vec<u32>) {
        let lock = std::fs::read_to_string(self.dir.path().join(".msctl/supervisor.lock"))
            .expect("supervisor lock");
        let supervisor = lock.trim().parse().expect("supervisor pid");
        let registry = self.registry();
        let instances = registry["services"]
            .as_object()
            .into_iter()
            .flat_map(|services| services.values())
            .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
            .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
            .collect();
        (supervisor, instances)
    }

    pub fn registry(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.path().join(".msctl/registry.json"))
            .expect("registry");
        serde_json::from_str(&text).expect("registry JSON")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new(&self.msctl)
            .arg("down")
            .current_dir(self.dir.path())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// CPU time (user + system) a process has used so far, from /proc.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which may itself hold spaces: utime and stime are
    // the 14th and 15th of the whole line, in clock ticks.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    from_ticks(ticks)
}

/// The time every core of the machine has spent busy (anything but idle and waiting for disk),
/// and the time they have existed, both summed over the cores, from `/proc/stat`.
pub fn machine_time() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let (busy, all) = busy_and_all_ticks(&stat);
    (from_ticks(busy), from_ticks(all))
}

/// The busy and all ticks of `/proc/stat`'s first line, the cores summed.
fn busy_and_all_ticks(stat: &str) -> (u64, u64) {
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal, then guest time, already counted in user.
    let all: u64 = ticks.iter().take(8).sum();
    let waiting = ticks.get(3).unwrap_or(&0) + ticks.get(4).unwrap_or(&0);
    (all - waiting, all)
}

/// Clock ticks as time.
fn from_ticks(ticks: u64) -> Duration {
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machines_busy_time_leaves_out_idle_and_disk_waits_and_counts_guests_once() {
        let stat = "cpu  100 5 40 800 20 3 2 1 50 0\ncpu0 50 2 20 400 10 1 1 0 25 0\n";
        assert_eq!(busy_and_all_ticks(stat), (151, 971));
        assert_eq!(busy_and_all_ticks(""), (0, 0));
    }
}
