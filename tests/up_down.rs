//! `msctl up` and `down` in both modes, dependency order, failures, restarts and orphans, run
//! against real child processes: the sample services and the misbehaving fixture.

mod common;

use common::{TestProject, alive, get_json, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::Duration;

fn lines_index(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[test]
fn detached_up_then_down_frees_everything() {
    let p = TestProject::sample();
    let stderr = p.up();
    // Plain lines when stderr is not a terminal: no escape codes.
    assert!(
        !stderr.contains('\u{1b}'),
        "control characters in: {stderr}"
    );
    // Dependency order: the gateway starts only once users and posts are healthy.
    let gateway_starts = lines_index(&stderr, "gateway-1 starting");
    assert!(
        lines_index(&stderr, "users-1 healthy") < gateway_starts,
        "{stderr}"
    );
    assert!(
        lines_index(&stderr, "posts-1 healthy") < gateway_starts,
        "{stderr}"
    );

    let (status, body) = get_json(&format!("{}/users/1/posts", p.url_of("gateway-1")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["posts"].as_array().unwrap().len(), 3);

    let pids = p.pids_of(&["users-1", "posts-1", "gateway-1"]);
    let ports: Vec<u16> = ["users-1", "posts-1", "gateway-1"]
        .iter()
        .map(|i| {
            p.instance(i).unwrap()["address"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let out = p.msctl().arg("down").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped 3 instance(s)"));
    for pid in pids {
        assert!(!alive(pid), "pid {pid} still runs after down");
    }
    for port in ports {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is still taken after down"
        );
    }
    assert!(p.registry().is_none(), "the registry is removed");
    assert!(p.processes().is_empty());

    // Idempotent: nothing up is not an error.
    let out = p.msctl().arg("down").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing is running"));
}

#[test]
fn foreground_up_stops_everything_on_ctrl_c() {
    let p = TestProject::sample();
    let mut up = p
        .msctl_process()
        .arg("up")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let gateway = p.wait_for_state("gateway-1", "healthy");
    let pids = p.pids_of(&["users-1", "posts-1", "gateway-1"]);
    assert_eq!(gateway["state"], "healthy");
    p.wait_until_ready();
    kill(Pid::from_raw(up.id() as i32), Signal::SIGINT).unwrap();
    let status = wait_until(Duration::from_secs(20), "msctl up to exit", || {
        up.try_wait().unwrap()
    });
    let output = up.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.code(), Some(0), "{stderr}");
    // Logs were multiplexed with instance prefixes.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("users-1   | ") && l.contains("listening")),
        "{stderr}"
    );
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived msctl up");
    }
    assert!(p.registry().is_none());
}

#[test]
fn independent_services_start_in_parallel() {
    let p = TestProject::new(
        r#"
[services.slow-a]
command = ["{bin}/msctl-fixture", "--startup-delay", "400"]
[services.slow-b]
command = ["{bin}/msctl-fixture", "--startup-delay", "400"]
[services.after]
command = ["{bin}/msctl-fixture"]
depends_on = ["slow-a", "slow-b"]
"#,
    );
    let stderr = p.up();
    // Started one after the other, one would be healthy before the other starts.
    assert!(
        lines_index(&stderr, "slow-b-1 starting") < lines_index(&stderr, "slow-a-1 healthy"),
        "{stderr}"
    );
    assert!(
        lines_index(&stderr, "slow-a-1 starting") < lines_index(&stderr, "slow-b-1 healthy"),
        "{stderr}"
    );
    assert!(
        lines_index(&stderr, "after-1 starting") > lines_index(&stderr, "slow-b-1 healthy"),
        "{stderr}"
    );
}

#[test]
fn naming_a_service_starts_it_with_its_dependencies_only() {
    let p = TestProject::new(
        r#"
[services.base]
command = ["{bin}/msctl-fixture"]
[services.api]
command = ["{bin}/msctl-fixture"]
depends_on = ["base"]
[services.other]
command = ["{bin}/msctl-fixture"]
"#,
    );
    p.msctl().args(["up", "-d", "api"]).assert().success();
    assert!(p.instance("api-1").is_some() && p.instance("base-1").is_some());
    assert!(p.instance("other-1").is_none());
    // Up again with everything named: it starts only what is missing.
    let out = p.msctl().args(["up", "-d"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("starting other in the running system"));
    p.wait_for_state("other-1", "healthy");
    // And once all runs, up says so and fails.
    let out = p.msctl().args(["up", "-d"]).output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
}

#[test]
fn a_failed_start_stops_what_was_started_and_shows_the_log() {
    let p = TestProject::new(
        r#"
[services.fine]
command = ["{bin}/msctl-fixture"]
[services.broken]
command = ["{bin}/msctl-fixture", "--unhealthy"]
start_timeout = "1s"
depends_on = ["fine"]
"#,
    );
    let out = p.msctl().args(["up", "-d"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("error: `broken-1` did not start: not healthy within 1000 ms; the last health check: GET /health answered 503 Service Unavailable"),
        "{stderr}"
    );
    assert!(
        stderr.contains("broken-1 listening on"),
        "the failing service's log lines are shown: {stderr}"
    );
    assert!(p.registry().is_none());
    wait_until(Duration::from_secs(10), "everything to stop", || {
        p.processes().is_empty().then_some(())
    });
}

#[test]
fn a_service_that_exits_at_start_fails_up_in_the_foreground_too() {
    let p = TestProject::new(
        r#"
[services.dies]
command = ["{bin}/msctl-fixture", "--crash-after", "0", "--exit-code", "3"]
"#,
    );
    let out = p.msctl().arg("up").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("exited with code 3 before it was healthy"),
        "{stderr}"
    );
    assert!(p.processes().is_empty());
}

#[test]
fn a_crash_is_restarted_with_backoff_until_healthy() {
    let p = TestProject::new(
        r#"
[services.flaky]
command = ["{bin}/msctl-fixture", "--crash-once", "crashed.marker", "--crash-after", "300"]
"#,
    );
    p.up();
    let first_pid = p.pid_of("flaky-1").unwrap();
    let restarted = p.wait_until("flaky-1 to restart and be healthy", |p| {
        p.instance("flaky-1")
            .filter(|i| i["restarts"] == 1 && i["state"] == "healthy")
    });
    assert_ne!(restarted["pid"].as_u64().unwrap() as u32, first_pid);
    assert!(!alive(first_pid));
    let out = p.msctl().args(["logs", "flaky"]).output().unwrap();
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains("flaky-1 | crashing on purpose with code 1"),
        "{logs}"
    );
    assert!(
        logs.contains("flaky-1 | [msctl] --- flaky-1 exited with code 1 ---"),
        "{logs}"
    );
    assert_eq!(logs.matches("listening on").count(), 2, "{logs}");
}

#[test]
fn the_restart_limit_leaves_the_service_down_and_ps_says_why() {
    let p = TestProject::new(
        r#"
[services.crashy]
command = ["{bin}/msctl-fixture", "--crash-after", "150"]
max_restarts = 2
"#,
    );
    p.up();
    let gone = p.wait_until("crashy-1 to be given up", |p| {
        p.instance("crashy-1").filter(|i| i["state"] == "failed")
    });
    assert_eq!(gone["restarts"], 2);
    assert!(
        gone["reason"]
            .as_str()
            .unwrap()
            .starts_with("restart limit (2) reached; last: exited with code 1"),
        "{gone}"
    );
    let out = p.msctl().arg("ps").output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("restart limit (2) reached"), "{table}");
    // health fails for CI: the instance is down.
    let out = p.msctl().arg("health").output().unwrap();
    assert_eq!(out.status.code(), Some(8));
}

#[test]
fn sigkill_of_the_supervisor_leaves_no_process_behind() {
    let p = TestProject::new(
        r#"
[services.api]
command = ["{bin}/msctl-fixture", "--spawn-child"]
[services.users]
command = ["{bin}/users"]
"#,
    );
    p.up();
    let supervisor = p.supervisor_pid();
    let pids = p.pids_of(&["api-1", "users-1"]);
    let log = std::fs::read_to_string(p.path().join(".msctl/logs/api-1.log")).unwrap();
    let grandchild: u32 = log
        .split("spawned child ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(alive(grandchild));
    kill(Pid::from_raw(supervisor as i32), Signal::SIGKILL).unwrap();
    // The instances die with their supervisor, through their parent-death signal.
    for pid in &pids {
        wait_until(
            Duration::from_secs(5),
            &format!("pid {pid} to die with its supervisor"),
            || (!alive(*pid)).then_some(()),
        );
    }
    // ps still works from the registry, and says it is stale.
    let rows = p.json(&["ps", "--json"]);
    assert!(
        rows.as_array().unwrap().iter().all(|r| r["stale"] == true),
        "{rows}"
    );
    // What an instance started itself has no such signal; the next `down` finds it by its
    // environment and stops it, with the stale registry.
    p.msctl().arg("down").assert().success();
    assert!(
        !alive(grandchild),
        "the grandchild {grandchild} outlived down"
    );
    assert!(p.registry().is_none());
    assert!(p.processes().is_empty());
    p.up();
    assert_eq!(p.instance("users-1").unwrap()["state"], "healthy");
}

/// A system whose one instance clears its parent-death signal, with its supervisor then killed:
/// the project, the dead supervisor's pid and the instance that outlived it.
fn orphaned_instance() -> (TestProject, u32, u32) {
    let p = TestProject::new(
        r#"
[services.api]
command = ["{bin}/msctl-fixture", "--outlive-parent"]
"#,
    );
    p.up();
    let supervisor = p.supervisor_pid();
    let api = p.pid_of("api-1").unwrap();
    kill(Pid::from_raw(supervisor as i32), Signal::SIGKILL).unwrap();
    wait_until(Duration::from_secs(5), "the supervisor to die", || {
        (!alive(supervisor)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        alive(api),
        "precondition: this instance outlives its supervisor"
    );
    (p, supervisor, api)
}

#[test]
fn instances_left_by_a_dead_supervisor_are_stopped_by_the_next_down() {
    let (p, _, api) = orphaned_instance();
    let out = p.msctl().arg("down").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("had died; stopped 1 instance(s) it left: api-1"),
        "{stderr}"
    );
    assert!(!alive(api));
    assert!(p.registry().is_none());
}

#[test]
fn up_after_a_dead_supervisor_stops_its_leftovers_first() {
    let (p, supervisor, api) = orphaned_instance();
    let stderr = p.up();
    assert!(
        stderr.contains(&format!(
            "stopped api-1 left running by a supervisor that died (pid {supervisor})"
        )),
        "{stderr}"
    );
    assert!(!alive(api));
    assert_ne!(p.pid_of("api-1").unwrap(), api);
}

#[test]
fn a_taken_fixed_port_is_named_with_its_holder() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let p = TestProject::new(&format!(
        r#"
[services.api]
command = ["{{bin}}/msctl-fixture"]
port = {port}
"#
    ));
    let out = p.msctl().args(["up", "-d", "--no-build"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "port {port} for `api` is already taken by pid {}",
            std::process::id()
        )),
        "{stderr}"
    );
    assert!(p.processes().is_empty());
}

#[test]
fn a_service_that_ignores_sigterm_is_killed_after_its_stop_timeout() {
    let p = TestProject::new(
        r#"
[services.stubborn]
command = ["{bin}/msctl-fixture", "--ignore-sigterm"]
stop_timeout = "300ms"
"#,
    );
    p.up();
    let pid = p.pid_of("stubborn-1").unwrap();
    p.msctl().arg("down").assert().success();
    assert!(!alive(pid));
    let log = std::fs::read_to_string(p.path().join(".msctl/logs/stubborn-1.log")).unwrap();
    assert!(
        log.contains("did not stop within 300 ms; killing it"),
        "{log}"
    );
}

#[test]
fn a_service_that_turns_unhealthy_is_restarted() {
    // A stopped (SIGSTOP) process holds its port but answers nothing: a hung service.
    let p = TestProject::new(
        r#"
[services.frozen]
command = ["{bin}/msctl-fixture"]
health_interval = "100ms"
unhealthy_after = 2
"#,
    );
    p.up();
    let pid = p.pid_of("frozen-1").unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    let back = p.wait_until("frozen-1 to be replaced", |p| {
        p.instance("frozen-1")
            .filter(|i| i["restarts"] == 1 && i["state"] == "healthy")
    });
    assert_ne!(back["pid"].as_u64().unwrap() as u32, pid);
    assert!(!alive(pid), "the frozen process was killed");
}

#[test]
fn a_failed_build_shows_its_output_and_starts_nothing() {
    let p = TestProject::new(
        r#"
[services.api]
command = ["{bin}/msctl-fixture"]
build = ["sh", "-c", "echo compiling api; echo 'error[E0425]: oops' >&2; exit 3"]
"#,
    );
    let out = p.msctl().args(["up", "-d"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("error: build failed: `sh -c"), "{stderr}");
    assert!(stderr.contains("exited with code 3"), "{stderr}");
    assert!(
        stderr.contains("compiling api") && stderr.contains("error[E0425]: oops"),
        "the whole build output is shown: {stderr}"
    );
    assert!(p.registry().is_none() && p.processes().is_empty());

    // A long output is shown by its end, where a compiler's errors and summary are, and a byte
    // that is not UTF-8 does not hide it (it hid all of it).
    p.write(
        "msctl.toml",
        &format!(
            "[services.api]\ncommand = [\"{}/msctl-fixture\"]\nbuild = [\"sh\", \"-c\", \"seq 1 5000; printf 'caf\\\\351 error: the end\\\\n' >&2; exit 3\"]\n",
            common::bin_dir().display()
        ),
    );
    let stderr = p.fails_saying(&["up", "-d"], 4);
    assert!(
        stderr.contains("the last 200 lines of the build output:\n4802\n"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("4999\n5000\ncaf\u{fffd} error: the end\nhint: the whole build output is in"),
        "{stderr}"
    );
    assert!(!stderr.contains("\n4801\n"), "{stderr}");
}

#[test]
fn identical_builds_run_once_and_state_is_private() {
    let p = TestProject::new(
        r#"
[defaults]
build = ["sh", "-c", "echo built >> builds.txt"]

[services.a]
command = ["{bin}/msctl-fixture"]
[services.b]
command = ["{bin}/msctl-fixture"]
"#,
    );
    p.up();
    assert_eq!(
        std::fs::read_to_string(p.path().join("builds.txt")).unwrap(),
        "built\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |rel: &str| {
        std::fs::metadata(p.path().join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(".msctl"), 0o700);
    assert_eq!(mode(".msctl/logs"), 0o700);
    assert_eq!(mode(".msctl/registry.json"), 0o600);
    assert_eq!(mode(".msctl/logs/a-1.log"), 0o600);
}

#[test]
fn build_runs_the_build_steps_up_would_and_starts_nothing() {
    let p = TestProject::new(
        r#"
[defaults]
build = ["sh", "-c", "echo shared >> builds.txt"]

[services.api]
command = ["{bin}/msctl-fixture"]
depends_on = ["db"]
[services.db]
command = ["{bin}/msctl-fixture"]
[services.web]
command = ["{bin}/msctl-fixture"]
build = ["sh", "-c", "echo web >> builds.txt"]
[services.broken]
command = ["{bin}/msctl-fixture"]
build = ["sh", "-c", "echo 'error: broken does not compile' >&2; exit 2"]
"#,
    );
    let builds = || std::fs::read_to_string(p.path().join("builds.txt")).unwrap_or_default();
    // api and what it depends on: their one shared command, once.
    p.msctl().args(["build", "api"]).assert().success();
    assert_eq!(builds(), "shared\n");
    p.msctl().args(["build", "web"]).assert().success();
    assert_eq!(builds(), "shared\nweb\n");
    assert!(
        p.registry().is_none() && p.processes().is_empty(),
        "nothing started"
    );

    let out = p.msctl().arg("build").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("error: broken does not compile"),
        "{stderr}"
    );

    let out = p.msctl().args(["build", "webb"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `web`?"));
}

#[test]
fn what_cargo_run_gave_msctl_reaches_neither_builds_nor_services() {
    let p = TestProject::new(
        r#"
[services.api]
command = ["sh", "-c", "env > service-env.txt; exec {bin}/msctl-fixture"]
build = ["sh", "-c", "env > build-env.txt"]
"#,
    );
    // As `cargo run -- up` starts msctl: its own package's variables, beside the user's.
    p.msctl()
        .env("CARGO_PKG_NAME", "msctl")
        .env("CARGO_PKG_VERSION", "9.9.9-test")
        .env("CARGO_MANIFEST_DIR", "/nowhere/msctl-test")
        .env("CARGO_MANIFEST_PATH", "/nowhere/msctl-test/Cargo.toml")
        .env("CARGO_HOME", "/kept/cargo-home")
        .args(["up", "-d"])
        .assert()
        .success();
    for file in ["build-env.txt", "service-env.txt"] {
        let env = std::fs::read_to_string(p.path().join(file)).unwrap();
        assert!(
            !env.contains("9.9.9-test") && !env.contains("/nowhere/msctl-test"),
            "{file}: {env}"
        );
        assert!(env.contains("CARGO_HOME=/kept/cargo-home"), "{file}: {env}");
    }
    assert!(
        std::fs::read_to_string(p.path().join("service-env.txt"))
            .unwrap()
            .contains("MSCTL_INSTANCE=api-1")
    );
}

#[test]
fn a_supervisor_that_does_not_answer_is_not_mistaken_for_a_dead_one() {
    let p = TestProject::new(
        r#"
[services.api]
command = ["{bin}/msctl-fixture"]
"#,
    );
    p.up();
    let supervisor = p.supervisor_pid() as i32;
    let api = p.pid_of("api-1").unwrap();
    kill(Pid::from_raw(supervisor), Signal::SIGSTOP).unwrap();
    let out = p.msctl().arg("ps").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not answer"));
    let out = p.msctl().args(["up", "-d", "--no-build"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(alive(api), "a live system's instances are left alone");
    // down asks it to stop with SIGTERM, which it acts on once it runs again.
    let down = std::thread::spawn({
        let mut cmd = p.msctl();
        move || cmd.arg("down").output().unwrap()
    });
    // Past down's ping timeout (1.5 s), with room for a slow machine.
    std::thread::sleep(Duration::from_millis(4000));
    kill(Pid::from_raw(supervisor), Signal::SIGCONT).unwrap();
    let out = down.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("does not answer; sending it SIGTERM"),
        "{stderr}"
    );
    assert!(!alive(api) && !alive(supervisor as u32));
    assert!(p.registry().is_none());
}

#[test]
fn a_service_added_to_msctl_toml_while_up_is_started_by_up() {
    let p = TestProject::new(
        r#"
[services.first]
command = ["{bin}/msctl-fixture"]
"#,
    );
    p.up();
    let first = p.pid_of("first-1").unwrap();
    let mut manifest = std::fs::read_to_string(p.path().join("msctl.toml")).unwrap();
    manifest.push_str(
        "\n[services.second]\ncommand = [\"{bin}/msctl-fixture\"]\ndepends_on = [\"first\"]\n"
            .replace("{bin}", &common::bin_dir().display().to_string())
            .as_str(),
    );
    p.write("msctl.toml", &manifest);
    let out = p.msctl().args(["up", "-d", "second"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.instance("second-1").unwrap()["state"], "healthy");
    assert_eq!(p.pid_of("first-1"), Some(first), "what runs is left alone");
    // A broken msctl.toml is reported, and the running system is kept.
    p.write(
        "msctl.toml",
        &format!("{manifest}\n[services.third]\ncomand = [\"x\"]\n"),
    );
    let out = p.msctl().args(["start", "second"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown key `comand`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(alive(first));
}

#[test]
fn a_command_that_cannot_run_fails_up_with_its_reason() {
    let p = TestProject::new(
        r#"
[services.ghost]
command = ["./no/such/program", "--flag"]
start_timeout = "30s"
"#,
    );
    let out = p.msctl().args(["up", "-d"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("`ghost-1` did not start: cannot run"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no/such/program: no such file; build it first (`msctl build`), or correct the path in msctl.toml"),
        "{stderr}"
    );
    assert!(p.registry().is_none());

    // Each way a program cannot run is named with what to do about it.
    std::fs::create_dir(p.path().join("folder")).unwrap();
    std::fs::write(p.path().join("script.sh"), "echo hi\n").unwrap();
    std::fs::write(p.path().join("local"), "#!/bin/sh\n").unwrap();
    // Scripts whose `#!` names an interpreter that is not there: exec says "no such file"
    // of a file that plainly is.
    std::fs::write(p.path().join("crlf.sh"), "#!/bin/sh\r\necho hi\r\n").unwrap();
    std::fs::write(p.path().join("old.py"), "#!/usr/bin/python0\nprint(1)\n").unwrap();
    for script in ["local", "crlf.sh", "old.py"] {
        let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(p.path().join(script), executable).unwrap();
    }
    for (program, said) in [
        (
            "msctl-no-such-program",
            "it is not on PATH (nor in /usr/local/sbin, /usr/sbin, /sbin); install it, or give its path in msctl.toml",
        ),
        ("folder", "it is a folder, not a program"),
        ("./script.sh", "it is not executable: `chmod +x"),
        (
            "local",
            "a bare name is looked for on PATH; for the one in the project folder write `./local`",
        ),
        (
            "./crlf.sh",
            "its first line, `#!/bin/sh`, ends in a Windows line ending (CR)",
        ),
        (
            "./old.py",
            "the interpreter its first line names, `/usr/bin/python0`, is not installed",
        ),
    ] {
        p.write(
            "msctl.toml",
            &format!("[services.ghost]\ncommand = [\"{program}\"]\n"),
        );
        let stderr = p.fails_saying(&["up", "-d"], 5);
        assert!(stderr.contains(said), "{program}: {stderr}");
    }
}

#[test]
fn a_job_runs_to_its_end_before_what_depends_on_it_starts() {
    // A migration: the service that needs its work refuses to start before it is done.
    let p = TestProject::new(
        r#"
[services.migrate]
command = ["sh", "-c", "sleep 0.3; echo migrated > migrated; echo migration done"]
job = true
[services.api]
command = ["sh", "-c", "test -f migrated || { echo started too early; exit 3; }; exec {bin}/msctl-fixture"]
depends_on = ["migrate"]
"#,
    );
    let stderr = p.up();
    assert!(stderr.contains("migrate-1 completed in"), "{stderr}");
    assert!(
        lines_index(&stderr, "migrate-1 completed") < lines_index(&stderr, "api-1 starting"),
        "{stderr}"
    );
    assert_eq!(p.instance("migrate-1").unwrap()["state"], "completed");
    assert_eq!(p.instance("api-1").unwrap()["state"], "healthy");
    assert!(p.log_text("migrate-1").contains("migration done"));
    // `health` counts a completed job as done, not as down.
    let out = p.msctl().arg("health").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("migrate-1") && l.contains("completed")),
        "{text}"
    );
    // Asked again, it runs again.
    std::fs::remove_file(p.path().join("migrated")).unwrap();
    p.msctl().args(["restart", "migrate"]).assert().success();
    assert!(p.path().join("migrated").is_file());
    p.msctl().arg("down").assert().success();

    // A job that fails fails `up`, with its log, and what depends on it never starts.
    p.write(
        "msctl.toml",
        r#"
[services.migrate]
command = ["sh", "-c", "echo no database here; exit 4"]
job = true
[services.api]
command = ["sh", "-c", "echo api ran > api-ran; exec sleep 60"]
depends_on = ["migrate"]
"#,
    );
    let out = p.msctl().args(["up", "-d"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("error: `migrate-1` did not start: the job exited with code 4"),
        "{stderr}"
    );
    assert!(stderr.contains("no database here"), "{stderr}");
    assert!(!p.path().join("api-ran").exists());
}

#[test]
fn profiles_leave_services_out_until_asked_for() {
    let p = TestProject::new(
        r#"
[services.a]
command = ["{bin}/msctl-fixture"]
[services.tools]
command = ["{bin}/msctl-fixture"]
profiles = ["debug"]
[services.c]
command = ["{bin}/msctl-fixture"]
profiles = ["extra", "debug"]
depends_on = ["a"]
"#,
    );
    let started = |p: &TestProject| -> Vec<String> {
        let mut names: Vec<String> = p
            .registry()
            .map(|r| r["services"].as_object().unwrap().keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    p.up();
    assert_eq!(started(&p), ["a"]);
    // Every service, to `restart`, is every one that runs.
    p.msctl().arg("restart").assert().success();
    assert_eq!(started(&p), ["a"]);
    // Named, a service starts whatever its profile.
    p.msctl().args(["start", "tools"]).assert().success();
    assert_eq!(started(&p), ["a", "tools"]);
    p.msctl().arg("down").assert().success();

    let out = p
        .msctl()
        .env("MSCTL_PROFILES", "extra")
        .args(["up", "-d"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(started(&p), ["a", "c"]);
    p.msctl().arg("down").assert().success();
    let out = p
        .msctl()
        .args(["up", "-d", "--profile", "debug"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(started(&p), ["a", "c", "tools"]);
    p.msctl().arg("down").assert().success();
    // The project's .env may ask for them too, as COMPOSE_PROFILES in compose's.
    p.write(".env", "MSCTL_PROFILES=extra\n");
    p.up();
    assert_eq!(started(&p), ["a", "c"]);
    p.msctl().arg("down").assert().success();
    std::fs::remove_file(p.path().join(".env")).unwrap();

    let stderr = p.fails_saying(&["up", "-d", "--profile", "nope"], 2);
    assert!(
        stderr.contains("--profile nope: no service has that profile; profiles: debug, extra"),
        "{stderr}"
    );
}
