//! `msctl export kubernetes` on the sample system: every manifest valid against the Kubernetes
//! schema (kubernetes-validate, from PyPI), the wiring right when read back, the output the same
//! bytes every time, and the environment the manifests give enough to run the real binaries.

mod common;

use common::*;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The sample system's msctl.toml, exported into a fresh folder: file name → documents.
fn export(out: &Path) -> BTreeMap<String, Vec<Value>> {
    export_from(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("msctl.toml"),
        out,
    )
}

/// `msctl -f MANIFEST export ARGS --out OUT`, which must succeed.
fn run_export(manifest: &Path, args: &[&str], out: &Path) {
    let run = Command::new(env!("CARGO_BIN_EXE_msctl"))
        .arg("-f")
        .arg(manifest)
        .arg("export")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// The msctl.toml at `manifest`, exported into `out`: file name → documents.
fn export_from(manifest: &Path, out: &Path) -> BTreeMap<String, Vec<Value>> {
    run_export(
        manifest,
        &["kubernetes", "--namespace", "shop", "--tag", "t1"],
        out,
    );
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let docs = serde_norway::Deserializer::from_str(&text)
                .map(|d| Value::deserialize(d).unwrap())
                .collect();
            (p.file_name().unwrap().to_string_lossy().to_string(), docs)
        })
        .collect()
}

fn workloads(files: &BTreeMap<String, Vec<Value>>) -> Vec<&Value> {
    files
        .values()
        .flatten()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
        .collect()
}

/// `Service` name → its port.
fn services(files: &BTreeMap<String, Vec<Value>>) -> BTreeMap<String, u64> {
    files
        .values()
        .flatten()
        .filter(|d| d["kind"] == "Service")
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap().to_string(),
                d["spec"]["ports"][0]["port"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn env_of(workload: &Value) -> BTreeMap<String, Value> {
    workload["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

/// Every file in `dir` passes `kubernetes-validate --strict`, and the kustomization lists them.
fn assert_valid(dir: &Path, files: &BTreeMap<String, Vec<Value>>) {
    assert!(files.contains_key("kustomization.yaml"));
    let python = python_venv("kubernetes-validate", &["kubernetes-validate==1.37.0"]);
    let validate = python.parent().unwrap().join("kubernetes-validate");
    for name in files.keys().filter(|n| *n != "kustomization.yaml") {
        let out = Command::new(&validate)
            .arg("--strict")
            .arg(dir.join(name))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("passed"),
            "{name}: {text}"
        );
        assert!(!text.contains("ERROR"), "{name}: {text}");
    }
    let k = &files["kustomization.yaml"][0];
    let listed: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let others: Vec<&str> = files
        .keys()
        .map(String::as_str)
        .filter(|n| *n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, others);
    assert_eq!(k["namespace"], "shop");
}

#[test]
fn every_manifest_is_valid_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let files = export(dir.path());
    assert_valid(dir.path(), &files);
}

/// Read back: every `*_URL` names a Service at its port, every service exports to the
/// collector, probes check `/health`, every claim is mounted at `MSCTL_DATA_DIR`, and the
/// security defaults hold.
fn assert_wired(files: &BTreeMap<String, Vec<Value>>) {
    let services = services(files);
    let all = workloads(files);
    for w in all
        .iter()
        .filter(|w| w["metadata"]["name"] != "otel-collector")
    {
        let name = w["metadata"]["name"].as_str().unwrap();
        let env = env_of(w);
        let container = &w["spec"]["template"]["spec"]["containers"][0];
        // Every peer variable names a Service that exists, at its port.
        for (var, e) in env.iter().filter(|(k, _)| k.ends_with("_URL")) {
            let url = e["value"].as_str().unwrap();
            let host_port = url.trim_start_matches("http://");
            let (host, port) = host_port.split_once(':').unwrap();
            let service = host
                .strip_suffix(".shop.svc.cluster.local")
                .unwrap_or_else(|| panic!("{name} {var}={url}"));
            assert_eq!(
                services.get(service),
                Some(&port.parse().unwrap()),
                "{name} {var}={url}"
            );
        }
        // Every service exports to the collector, which exists.
        assert_eq!(
            env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"],
            "http://otel-collector.shop.svc.cluster.local:4318",
            "{name}"
        );
        assert_eq!(services.get("otel-collector"), Some(&4318));
        // Probes check the service's health path.
        if name != "nats" {
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                assert_eq!(
                    container[probe]["httpGet"]["path"], "/health",
                    "{name} {probe}"
                );
            }
        }
        // Every volume claim is mounted at MSCTL_DATA_DIR.
        if w["kind"] == "StatefulSet" {
            assert_eq!(w["spec"]["replicas"], 1, "{name}");
            let claim = w["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
                .as_str()
                .unwrap();
            let mount = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == claim)
                .unwrap_or_else(|| panic!("{name}: claim {claim} not mounted"));
            if name != "nats" {
                assert_eq!(mount["mountPath"], env["MSCTL_DATA_DIR"]["value"], "{name}");
            }
        }
        // Security defaults.
        assert_eq!(
            w["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
            true
        );
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
    }
}

#[test]
fn values_yaml_1_1_would_misread_stay_strings_for_kubernetes() {
    // Kubernetes reads YAML as 1.1, where `yes` is true and `12:30` a number: an env value
    // `DEBUG = "yes"` was written bare and `kubectl apply` refused the manifest.
    let tricky = [
        "yes",
        "no",
        "on",
        "Off",
        "y",
        "N",
        "=",
        "<<",
        "12:30",
        "1_000",
        "0b101",
        "null",
        "~",
        "true",
        "0123",
        "1e3",
        ".inf",
        "2026-11-28",
        "a: b",
        "#x",
        "it's",
        "multi\nline\n",
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = String::from(
        "[services.api]\ncommand = [\"/bin/api\", \"yes\", \"-p\", \"12:30\"]\nimage = \"api:1\"\n[services.api.env]\n",
    );
    for (i, value) in tricky.iter().enumerate() {
        manifest.push_str(&format!(
            "V{i:02} = {}\n",
            serde_json::to_string(value).unwrap()
        ));
    }
    std::fs::write(dir.path().join("msctl.toml"), manifest).unwrap();
    let out = dir.path().join("out");
    let files = export_from(&dir.path().join("msctl.toml"), &out);
    assert_valid(&out, &files);
    // Read back as Kubernetes reads it, by a YAML 1.1 parser (PyYAML's safe loader).
    let python = python_venv("kubernetes-validate", &["kubernetes-validate==1.37.0"]);
    let read = Command::new(python)
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d['kind'] == 'Deployment']\n\
             c = docs[0]['spec']['template']['spec']['containers'][0]\n\
             print(json.dumps({'args': c.get('args'), 'env': {e['name']: e.get('value') for e in c['env']}}))",
        )
        .arg(out.join("api.yaml"))
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let seen: Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(seen["args"], serde_json::json!(["yes", "-p", "12:30"]));
    for (i, value) in tricky.iter().enumerate() {
        assert_eq!(seen["env"][format!("V{i:02}")], *value, "{value:?}");
    }
}

#[test]
fn a_job_is_exported_as_a_kubernetes_job() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("msctl.toml"),
        "[services.migrate]\ncommand = [\"/bin/migrate\", \"--to\", \"latest\"]\nimage = \"migrate:1\"\njob = true\nkubernetes = { volume = \"1Gi\" }\n\n[services.api]\ncommand = [\"/bin/api\"]\nimage = \"api:1\"\ndepends_on = [\"migrate\"]\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let files = export_from(&dir.path().join("msctl.toml"), &out);
    assert_valid(&out, &files);
    let docs = &files["migrate.yaml"];
    assert_eq!(docs.len(), 1, "a Job and no Service: {docs:?}");
    let job = &docs[0];
    assert_eq!(job["kind"], "Job");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];
    assert_eq!(container["args"], serde_json::json!(["--to", "latest"]));
    assert!(container.get("readinessProbe").is_none(), "{container}");
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for mount in mounts {
        assert!(
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == mount),
            "the volume {mount} is defined: {pod}"
        );
    }
    let text = std::fs::read_to_string(out.join("migrate.yaml")).unwrap();
    assert!(text.contains("# a job: a Kubernetes Job."), "{text}");
}

#[test]
fn the_wiring_reads_back_right_and_the_output_is_the_same_every_time() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = export(a.path());
    export(b.path());
    for name in files.keys() {
        assert_eq!(
            std::fs::read(a.path().join(name)).unwrap(),
            std::fs::read(b.path().join(name)).unwrap(),
            "{name} differs between two exports"
        );
    }
    assert_wired(&files);
    let all = workloads(&files);
    assert_eq!(
        all.len(),
        6,
        "users, posts, gateway, web, nats and the collector"
    );
    let gateway = all
        .iter()
        .find(|w| w["metadata"]["name"] == "gateway")
        .unwrap();
    assert_eq!(gateway["kind"], "Deployment");
    assert_eq!(
        gateway["spec"]["template"]["spec"]["containers"][0]["image"],
        "gateway:t1"
    );
    for stateful in ["users", "posts", "nats"] {
        let w = all
            .iter()
            .find(|w| w["metadata"]["name"] == stateful)
            .unwrap();
        assert_eq!(w["kind"], "StatefulSet", "{stateful}");
    }
}

/// The environment `name`'s manifest gives its container, for a run on this machine: cluster
/// DNS names become loopback addresses at `ports`, and the data volume a folder below `data`.
fn local_env(
    files: &BTreeMap<String, Vec<Value>>,
    name: &str,
    ports: &BTreeMap<String, u16>,
    data: &Path,
) -> Vec<(String, String)> {
    let w = workloads(files)
        .into_iter()
        .find(|w| w["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no workload {name}"));
    let in_cluster = services(files);
    env_of(w)
        .into_iter()
        .map(|(var, e)| {
            let value = match e["value"].as_str() {
                Some(v) => v.to_string(),
                // The pod's own name.
                None => format!("{name}-0"),
            };
            let value = match var.as_str() {
                "PORT" => ports[name].to_string(),
                "MSCTL_LISTEN" => format!("127.0.0.1:{}", ports[name]),
                "MSCTL_DATA_DIR" => data.join("data").join(name).display().to_string(),
                _ => ports.iter().fold(value, |v, (service, port)| {
                    v.replace(
                        &format!("{service}.shop.svc.cluster.local:{}", in_cluster[service]),
                        &format!("127.0.0.1:{port}"),
                    )
                }),
            };
            assert!(!value.contains("cluster.local"), "{name} {var}={value}");
            (var, value)
        })
        .collect()
}

/// Runs the exported users, posts and gateway with exactly the environment their manifests
/// give, cluster DNS names replaced by loopback addresses: the system answers.
#[test]
fn the_manifests_environment_is_enough_to_run_the_system() {
    let dir = tempfile::tempdir().unwrap();
    let files = export(&dir.path().join("k8s"));
    let ports: BTreeMap<String, u16> = services(&files)
        .keys()
        .map(|s| (s.clone(), portpicker::pick_unused_port().unwrap()))
        .collect();
    let mut children = Children::default();
    for name in ["users", "posts", "gateway"] {
        let mut cmd = Command::new(bin(name));
        cmd.env_clear().stdout(Stdio::null()).stderr(Stdio::null());
        cmd.envs(local_env(&files, name, &ports, dir.path()));
        children.0.push(cmd.spawn().unwrap());
    }
    let gateway = format!("http://127.0.0.1:{}", ports["gateway"]);
    let (status, body) = wait_until(Duration::from_secs(30), "the system to answer", || {
        let answer = http().get(format!("{gateway}/users/1/posts")).send().ok()?;
        let status = answer.status().as_u16();
        // The gateway answers in part while posts is still starting.
        Some((status, answer.json::<Value>().ok()?))
            .filter(|(s, body)| *s == 200 && body["posts"].is_array())
    });
    assert_eq!(status, 200);
    assert_eq!(body["user"]["id"], 1, "{body}");
    assert_eq!(body["posts"].as_array().map(Vec::len), Some(3), "{body}");
}

/// Every file in `dir`, in name order, each under a `=== NAME` line: one text to snapshot.
fn folder_text(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| format!("=== {n}\n{}", std::fs::read_to_string(dir.join(n)).unwrap()))
        .collect()
}

/// The whole export of the sample system, file by file: a change to what is exported shows in
/// review as a change to this snapshot.
#[test]
fn the_sample_systems_export_is_snapshotted() {
    let dir = tempfile::tempdir().unwrap();
    export(dir.path());
    insta::assert_snapshot!(folder_text(dir.path()));
}

/// Each Containerfile in `dir` as a real parser reads it (dockerfile-parse, from PyPI):
/// file name → its instructions, `(INSTRUCTION, value)`, comments left out.
fn parsed_containerfiles(dir: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let python = python_venv("dockerfile-parse", &["dockerfile-parse==2.0.1"]);
    let script = "import json, sys\nfrom dockerfile_parse import DockerfileParser\nout = {}\nfor path in sys.argv[1:]:\n    with open(path, 'rb') as f:\n        parsed = DockerfileParser(fileobj=f)\n        out[path.rsplit('/', 1)[1]] = [[i['instruction'], i['value']] for i in parsed.structure if i['instruction'] != 'COMMENT']\nprint(json.dumps(out))\n";
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "Containerfile"))
        .collect();
    paths.sort();
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the last `instruction` in a Containerfile.
fn last<'a>(file: &'a [(String, String)], instruction: &str) -> &'a str {
    file.iter()
        .rev()
        .find(|(i, _)| i == instruction)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {instruction} in {file:?}"))
}

/// The sample system plus a Rust, a Python and a Node service made by `msctl scaffold`: the
/// manifests are valid and wired, a Containerfile builds every image they name, and the Python
/// and Node services, started as their images start them with their manifests' environment,
/// answer on `PORT` and reach users through `USERS_URL`.
#[test]
fn scaffolded_services_export_to_valid_manifests_and_containerfiles() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    copy_of_repository(&repo);
    let p = TestProject::at(&repo);
    for args in [
        &["scaffold", "billing", "--dep", "users"][..],
        &[
            "scaffold",
            "worker",
            "--template",
            "python",
            "--dep",
            "users",
        ],
        &["scaffold", "pager", "--template", "node", "--dep", "users"],
    ] {
        let out = p.msctl().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let k8s = work.path().join("k8s");
    let files = export_from(&repo.join("msctl.toml"), &k8s);
    assert_valid(&k8s, &files);
    assert_wired(&files);
    let image_of = |name: &str| {
        let w = workloads(&files)
            .into_iter()
            .find(|w| w["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no workload {name}"));
        w["spec"]["template"]["spec"]["containers"][0].clone()
    };
    assert_eq!(image_of("billing")["image"], "billing:t1");
    for script in ["worker", "pager"] {
        let container = image_of(script);
        assert_eq!(container["image"], format!("{script}:t1"));
        assert!(container.get("args").is_none(), "its image's CMD starts it");
    }

    let out = p
        .msctl()
        .args(["export", "containerfiles", "--tag", "t1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // billing is new: its image would not build with --locked until Cargo.lock has it.
    assert!(stderr.contains("Cargo.lock is not up to date"), "{stderr}");
    assert!(
        stderr.contains("nats: runs the image nats:2.10"),
        "{stderr}"
    );
    let dir = repo.join("containers");
    let script = std::fs::read_to_string(dir.join("build.sh")).unwrap();
    let parsed = parsed_containerfiles(&dir);
    // Every image the manifests name, other than given ones, has a Containerfile and is
    // built under that name.
    for w in workloads(&files) {
        let image = w["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap();
        let Some(name) = image.strip_suffix(":t1") else {
            continue;
        };
        let file = format!("{name}.Containerfile");
        assert!(
            script.contains(&format!("build \"containers/{file}\" \"{image}\"")),
            "{script}"
        );
        let instructions = &parsed[&file];
        let froms: Vec<_> = instructions.iter().filter(|(i, _)| i == "FROM").collect();
        assert_eq!(froms.len(), 2, "{file}: a build stage and a runtime stage");
        assert_eq!(last(instructions, "USER"), "65532:65532", "{file}");
        assert_eq!(last(instructions, "EXPOSE"), "8080", "{file}");
        assert!(
            last(instructions, "ENV").contains("MSCTL_LISTEN=0.0.0.0:8080"),
            "{file}"
        );
        // What it copies from the project is there.
        for (_, value) in instructions.iter().filter(|(i, _)| i == "COPY") {
            if !value.starts_with("--from") {
                let from = value.split_whitespace().next().unwrap();
                assert!(repo.join(from).exists(), "{file}: COPY {value}");
            }
        }
        assert!(dir.join(format!("{file}.dockerignore")).exists());
    }
    let billing = &parsed["billing.Containerfile"];
    assert!(
        billing.iter().any(|(i, v)| i == "RUN"
            && v.contains("cargo build --release --locked -p billing --bin billing")),
        "{billing:?}"
    );
    assert_eq!(last(billing, "ENTRYPOINT"), "[\"/usr/local/bin/billing\"]");

    // Each script service as its image runs it, beside users run with its manifest's env: it
    // answers on PORT and reaches users through USERS_URL.
    let ports: BTreeMap<String, u16> = services(&files)
        .keys()
        .map(|s| (s.clone(), portpicker::pick_unused_port().unwrap()))
        .collect();
    let mut children = Children::default();
    let mut users = Command::new(bin("users"));
    users
        .env_clear()
        .envs(local_env(&files, "users", &ports, work.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    children.0.push(users.spawn().unwrap());
    // Python: /opt/venv is a venv with the template's requirements.
    let venv = python_venv(
        "python-template",
        &[
            "-r",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/templates/python/requirements.txt"
            ),
        ],
    );
    let venv = venv.parent().unwrap().parent().unwrap().to_path_buf();
    let image = Image {
        parsed: &parsed,
        files: &files,
        ports: &ports,
        work: work.path(),
    };
    let body = image.run_and_ask(&repo, "worker", Some(&venv), &mut children);
    assert_eq!(body["users"]["id"], 1, "{body}");
    // Node: its packages installed in its folder, as the image's build stage does.
    let app = repo.join("services/pager");
    let installed = Command::new("npm")
        .args([
            "install",
            "--omit=dev",
            "--no-audit",
            "--no-fund",
            "--silent",
        ])
        .current_dir(&app)
        .status();
    assert!(
        installed.is_ok_and(|s| s.success()),
        "npm install failed: this test needs node and npm (Debian: apt-get install nodejs npm) and the npm registry"
    );
    let body = image.run_and_ask(&repo, "pager", None, &mut children);
    assert_eq!(body["users"]["id"], 1, "{body}");
}

/// What a test needs to start a service the way its image starts it.
struct Image<'a> {
    parsed: &'a BTreeMap<String, Vec<(String, String)>>,
    files: &'a BTreeMap<String, Vec<Value>>,
    ports: &'a BTreeMap<String, u16>,
    work: &'a Path,
}

impl Image<'_> {
    /// Starts `name` by its Containerfile's CMD, with `/opt/venv` mapped to `venv` and `/app`
    /// to its folder, the image's ENV and then its manifest's env; returns the answer to
    /// `GET /NAME/hello`.
    fn run_and_ask(
        &self,
        repo: &Path,
        name: &str,
        venv: Option<&Path>,
        children: &mut Children,
    ) -> Value {
        let file = &self.parsed[&format!("{name}.Containerfile")];
        assert_eq!(last(file, "WORKDIR"), "/app");
        let app = repo.join("services").join(name);
        let cmd: Vec<String> = serde_json::from_str(last(file, "CMD")).unwrap();
        let cmd: Vec<String> = cmd
            .iter()
            .map(
                |a| match (a.strip_prefix("/opt/venv/"), a.strip_prefix("/app/")) {
                    (Some(rest), _) => venv
                        .expect("a venv for a Python image")
                        .join(rest)
                        .display()
                        .to_string(),
                    (_, Some(rest)) => app.join(rest).display().to_string(),
                    _ => a.clone(),
                },
            )
            .collect();
        // The port was picked minutes ago, before the venv and npm installs: a test running
        // beside this one may have taken it since. Then the service is started on another.
        let mut ports = self.ports.clone();
        for attempt in 0.. {
            let log = self.work.join(format!("{name}.log"));
            let mut run = Command::new(&cmd[0]);
            run.args(&cmd[1..])
                .current_dir(&app)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            for (_, value) in file.iter().filter(|(i, _)| i == "ENV") {
                for pair in value.split_whitespace() {
                    let (k, v) = pair.split_once('=').unwrap();
                    run.env(k, v);
                }
            }
            run.envs(local_env(self.files, name, &ports, self.work));
            children.0.push(run.spawn().unwrap());
            let at = children.0.len() - 1;
            let url = format!("http://127.0.0.1:{}/{name}/hello", ports[name]);
            let answered = wait_until(
                Duration::from_secs(60),
                &format!("{name} to answer"),
                || {
                    if let Ok(Some(status)) = children.0[at].try_wait() {
                        return Some(Err((
                            status,
                            std::fs::read_to_string(&log).unwrap_or_default(),
                        )));
                    }
                    let answer = http().get(&url).send().ok()?;
                    (answer.status() == 200).then_some(())?;
                    answer.json::<Value>().ok().map(Ok)
                },
            );
            match answered {
                Ok(body) => return body,
                Err((_, log))
                    if (log.contains("EADDRINUSE") || log.contains("ddress already in use"))
                        && attempt < 3 =>
                {
                    ports.insert(name.to_string(), portpicker::pick_unused_port().unwrap());
                }
                Err((status, log)) => panic!("{name} exited ({status}): {log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }
}

/// The sample system's Containerfiles, build script and ignore files: a change to how images are
/// built shows in review as a change to this snapshot.
#[test]
fn the_sample_systems_containerfiles_are_snapshotted() {
    let dir = tempfile::tempdir().unwrap();
    run_export(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("msctl.toml"),
        &["containerfiles", "--tag", "t1"],
        dir.path(),
    );
    insta::assert_snapshot!(folder_text(dir.path()));
}

#[test]
fn out_naming_a_file_is_refused_and_the_file_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, "mine").unwrap();
    for kind in ["kubernetes", "containerfiles"] {
        let run = Command::new(env!("CARGO_BIN_EXE_msctl"))
            .arg("-f")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("msctl.toml"))
            .args(["export", kind, "--out"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{kind}: {stderr}");
        assert!(
            stderr.contains("manifests.yaml is a file; export writes several files into a folder"),
            "{kind}: {stderr}"
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}
