//! msctl.toml errors: each names the file, line and column, shows the line, and suggests a fix.
//! The messages are snapshots, so a change to them is a reviewed change.

mod common;

use common::TestProject;

/// Runs `msctl up` on `manifest` and returns its stderr with the temporary folder made stable.
fn error_for(manifest: &str) -> String {
    let p = TestProject::new(manifest);
    let out = p.msctl().args(["up", "--no-build"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "config errors exit 3");
    let dir = std::fs::canonicalize(p.path())
        .unwrap()
        .display()
        .to_string();
    String::from_utf8_lossy(&out.stderr)
        .replace(&dir, "[DIR]")
        .replace(&p.path().display().to_string(), "[DIR]")
}

#[test]
fn unknown_key_with_a_suggestion() {
    insta::assert_snapshot!(error_for("[services.users]\ncomand = [\"users\"]\n"));
}

#[test]
fn unknown_top_level_table() {
    insta::assert_snapshot!(error_for("[service.users]\ncommand = [\"users\"]\n"));
}

#[test]
fn wrong_type() {
    insta::assert_snapshot!(error_for(
        "[services.users]\ncommand = \"users --port 3\"\n"
    ));
}

#[test]
fn bad_port_value() {
    insta::assert_snapshot!(error_for(
        "[services.users]\ncommand = [\"users\"]\nport = \"any\"\n"
    ));
}

#[test]
fn more_replicas_than_msctl_runs() {
    insta::assert_snapshot!(error_for(
        "[services.users]\ncommand = [\"users\"]\nreplicas = 100000\n"
    ));
}

#[test]
fn bad_restart_policy() {
    insta::assert_snapshot!(error_for(
        "[services.users]\ncommand = [\"users\"]\nrestart = \"sometimes\"\n"
    ));
}

#[test]
fn unknown_dependency() {
    insta::assert_snapshot!(error_for(
        "[services.users]\ncommand = [\"users\"]\n\n[services.gateway]\ncommand = [\"gateway\"]\ndepends_on = [\"user\"]\n"
    ));
}

#[test]
fn dependency_cycle() {
    insta::assert_snapshot!(error_for(
        "[services.a]\ncommand = [\"a\"]\ndepends_on = [\"b\"]\n\n[services.b]\ncommand = [\"b\"]\ndepends_on = [\"c\"]\n\n[services.c]\ncommand = [\"c\"]\ndepends_on = [\"a\"]\n"
    ));
}

#[test]
fn two_services_on_one_fixed_port() {
    insta::assert_snapshot!(error_for(
        "[services.a]\ncommand = [\"a\"]\nport = 8080\n\n[services.b]\ncommand = [\"b\"]\nport = 8080\n"
    ));
}

#[test]
fn empty_command() {
    insta::assert_snapshot!(error_for("[services.a]\ncommand = []\n"));
}

#[test]
fn missing_command() {
    insta::assert_snapshot!(error_for("[services.a]\nport = \"auto\"\n"));
}

#[test]
fn toml_syntax_error() {
    insta::assert_snapshot!(error_for("[services.a]\ncommand = [\"a\"\n"));
}

#[test]
fn bad_service_name() {
    insta::assert_snapshot!(error_for("[services.Users]\ncommand = [\"a\"]\n"));
}

#[test]
fn service_named_like_an_instance_of_another() {
    // `users-1` beside `users`: `msctl kill users-1` killed the service and left no way to name
    // the instance.
    insta::assert_snapshot!(error_for(
        "[services.users]\ncommand = [\"a\"]\n\n[services.users-1]\ncommand = [\"b\"]\n"
    ));
}

#[test]
fn env_file_that_is_not_a_file_name() {
    insta::assert_snapshot!(error_for("[services.a]\ncommand = [\"a\"]\nenv_file = 3\n"));
}

#[test]
fn no_manifest_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_msctl"))
        .arg("ps")
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: no msctl.toml here or above; run msctl init\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("every folder above it; `msctl init` writes one")
            && stderr.contains("or pass -f path/to/msctl.toml"),
        "{stderr}"
    );
}

#[test]
fn zero_health_interval() {
    insta::assert_snapshot!(error_for(
        "[services.users]\ncommand = [\"users\"]\nhealth_interval = \"0s\"\n"
    ));
}

#[test]
fn zero_start_timeout_in_defaults() {
    insta::assert_snapshot!(error_for(
        "[defaults]\nstart_timeout = \"0s\"\n\n[services.users]\ncommand = [\"users\"]\n"
    ));
}

#[test]
fn zero_stop_timeout() {
    insta::assert_snapshot!(error_for(
        "[services.users]\ncommand = [\"users\"]\nstop_timeout = 0\n"
    ));
}

#[test]
fn zero_unhealthy_after() {
    insta::assert_snapshot!(error_for(
        "[services.users]\ncommand = [\"users\"]\nunhealthy_after = 0\n"
    ));
}

#[test]
fn no_services() {
    insta::assert_snapshot!(error_for(
        "# nothing here yet\n[defaults]\nrestart = \"always\"\n"
    ));
}

#[test]
fn depends_on_as_a_string() {
    insta::assert_snapshot!(error_for(
        "[services.users]\ncommand = [\"users\"]\n\n[services.gateway]\ncommand = [\"gateway\"]\ndepends_on = \"users\"\n"
    ));
}

/// `msctl up` on `bytes` as msctl.toml, as `error_for` does for text.
fn error_for_bytes(bytes: &[u8]) -> String {
    let p = TestProject::new("");
    std::fs::write(p.path().join("msctl.toml"), bytes).unwrap();
    let out = p.msctl().args(["up", "--no-build"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "config errors exit 3");
    let dir = std::fs::canonicalize(p.path()).unwrap();
    String::from_utf8_lossy(&out.stderr).replace(&dir.display().to_string(), "[DIR]")
}

#[test]
fn bytes_that_are_not_utf8() {
    insta::assert_snapshot!(error_for_bytes(
        b"[services.users]\ncommand = [\"users\", \"caf\xe9\"]\n"
    ));
}

#[test]
fn a_folder_or_a_link_loop_in_msctl_tomls_place_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("msctl.toml");
    let run = || {
        let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_msctl"))
            .args(["up", "--no-build"])
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    std::fs::create_dir(&manifest).unwrap();
    let stderr = run();
    assert!(
        stderr.contains("msctl.toml: it is a folder, not a file"),
        "{stderr}"
    );
    std::fs::remove_dir(&manifest).unwrap();
    std::os::unix::fs::symlink("msctl.toml", &manifest).unwrap();
    let stderr = run();
    assert!(
        stderr.contains("cannot read") && stderr.contains("symbolic links"),
        "{stderr}"
    );
}
