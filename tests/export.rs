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
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("msctl.toml");
    let run = Command::new(env!("CARGO_BIN_EXE_msctl"))
        .arg("-f")
        .arg(&manifest)
        .args([
            "export",
            "kubernetes",
            "--namespace",
            "shop",
            "--tag",
            "t1",
            "--out",
        ])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
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

#[test]
fn every_manifest_is_valid_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let files = export(dir.path());
    assert!(files.contains_key("kustomization.yaml"));
    let python = python_venv("kubernetes-validate", &["kubernetes-validate==1.37.0"]);
    let validate = python.parent().unwrap().join("kubernetes-validate");
    for name in files.keys().filter(|n| *n != "kustomization.yaml") {
        let out = Command::new(&validate)
            .arg("--strict")
            .arg(dir.path().join(name))
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
    // The kustomization lists every other file.
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
    let services = services(&files);
    let all = workloads(&files);
    assert_eq!(
        all.len(),
        5,
        "users, posts, gateway, nats and the collector"
    );
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
        let w = workloads(&files)
            .into_iter()
            .find(|w| w["metadata"]["name"] == name)
            .unwrap();
        let mut cmd = Command::new(bin(name));
        cmd.env_clear().stdout(Stdio::null()).stderr(Stdio::null());
        for (var, e) in env_of(w) {
            let value = match e["value"].as_str() {
                Some(v) => v.to_string(),
                // The pod's own name.
                None => format!("{name}-0"),
            };
            let value = match var.as_str() {
                "PORT" => ports[name].to_string(),
                "MSCTL_LISTEN" => format!("127.0.0.1:{}", ports[name]),
                "MSCTL_DATA_DIR" => dir.path().join("data").join(name).display().to_string(),
                _ => ports.iter().fold(value, |v, (service, port)| {
                    let port_in_cluster = services(&files)[service];
                    v.replace(
                        &format!("{service}.shop.svc.cluster.local:{port_in_cluster}"),
                        &format!("127.0.0.1:{port}"),
                    )
                }),
            };
            assert!(!value.contains("cluster.local"), "{name} {var}={value}");
            cmd.env(var, value);
        }
        children.0.push(cmd.spawn().unwrap());
    }
    let gateway = format!("http://127.0.0.1:{}", ports["gateway"]);
    let (status, body) = wait_until(Duration::from_secs(30), "the system to answer", || {
        let answer = http().get(format!("{gateway}/users/1/posts")).send().ok()?;
        let status = answer.status().as_u16();
        Some((status, answer.json::<Value>().ok()?)).filter(|(s, _)| *s == 200)
    });
    assert_eq!(status, 200);
    assert_eq!(body["user"]["id"], 1, "{body}");
    assert_eq!(body["posts"].as_array().unwrap().len(), 3, "{body}");
}

/// The whole export of the sample system, file by file: a change to what is exported shows in
/// review as a change to this snapshot.
#[test]
fn the_sample_systems_export_is_snapshotted() {
    let dir = tempfile::tempdir().unwrap();
    export(dir.path());
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    let all: String = names
        .iter()
        .map(|n| {
            format!(
                "=== {n}\n{}",
                std::fs::read_to_string(dir.path().join(n)).unwrap()
            )
        })
        .collect();
    insta::assert_snapshot!(all);
}
