//! `msctl export kubernetes`: the system of msctl.toml as plain Kubernetes manifests, one file per
//! service plus a collector, a namespace and a kustomization. The services' contract carries
//! over unchanged: they listen on `PORT`, find peers through `<NAME>_URL` (DNS names here, the
//! registry there), answer their health check, and export OTLP (to a collector here).
//! Deterministic: the same msctl.toml gives the same bytes.

use crate::config::{Config, Health, Port, Service};
use crate::containers::Source;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The port every exported service listens on, unless msctl.toml fixes one.
pub const PORT: u16 = 8080;
/// Where a service's data volume is mounted; its `MSCTL_DATA_DIR`.
pub const DATA_DIR: &str = "/data";
const COLLECTOR: &str = "otel-collector";
const COLLECTOR_IMAGE: &str = "otel/opentelemetry-collector:0.115.1";
/// A user id that is no one's: the images run as it.
const USER: u32 = 65532;

/// What the command line adds to msctl.toml.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: String,
    pub image_prefix: String,
    pub tag: String,
}

/// The files to write, by name, and notes to say (a stateful service held at one replica, a
/// service that needs no image built).
pub struct Export {
    pub files: BTreeMap<String, String>,
    pub notes: Vec<String>,
}

/// `sources` says where each service's image comes from (`containers::sources`).
pub fn export(
    config: &Config,
    sources: &BTreeMap<String, Source>,
    opts: &Options,
) -> Result<Export, String> {
    let mut files = BTreeMap::new();
    let mut notes = Vec::new();
    let ns = &opts.namespace;
    files.insert(
        "namespace.yaml".to_string(),
        yaml(
            "# The namespace the system runs in.",
            &[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})],
        ),
    );
    for service in config.services.values() {
        let source = sources
            .get(&service.name)
            .ok_or_else(|| format!("service `{}` has no image", service.name))?;
        let (docs, note) = service_docs(service, config, source, opts)?;
        let mut said: Vec<String> = note.into_iter().collect();
        // The files hold this machine's values, secrets often: they are named, not copied.
        if !service.env_files.is_empty() {
            said.push(format!(
                "env_file {} is not exported: make a Secret from it (`kubectl create secret generic {} --from-env-file=FILE`) and add it under the container's `envFrom`",
                service.env_files.join(", "),
                service.name
            ));
        }
        let mut comment = format!("# {}: exported by msctl from msctl.toml.", service.name);
        for n in said {
            comment.push_str(&format!("\n# {n}"));
            notes.push(format!("{}: {n}", service.name));
        }
        files.insert(format!("{}.yaml", service.name), yaml(&comment, &docs));
    }
    files.insert(
        format!("{COLLECTOR}.yaml"),
        yaml(
            "# An OpenTelemetry Collector: every service exports to it, as it exports to msctl on one machine.\n# Its `debug` exporter prints what arrives; point `exporters` at Jaeger, Tempo or a vendor.",
            &collector(ns),
        ),
    );
    let resources: Vec<&String> = files.keys().collect();
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": ns,
        "resources": resources,
    });
    files.insert(
        "kustomization.yaml".to_string(),
        yaml(
            "# `kubectl apply -k .` applies everything.",
            &[kustomization],
        ),
    );
    Ok(Export { files, notes })
}

fn yaml(comment: &str, docs: &[Value]) -> String {
    let mut out = format!("{comment}\n");
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&crate::yaml::to_string(doc));
    }
    out
}

fn labels(name: &str) -> Value {
    json!({"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "msctl"})
}

pub fn port_of(service: &Service) -> u16 {
    match service.port {
        Port::Fixed(p) => p,
        Port::Auto => PORT,
    }
}

/// `users` → `USERS_URL`, `user-db` → `USER_DB_URL`, as the kit reads them.
pub fn url_var(service: &str) -> String {
    format!("{}_URL", service.to_uppercase().replace('-', "_"))
}

fn dns(service: &str, ns: &str) -> String {
    format!("{service}.{ns}.svc.cluster.local")
}

/// Infrastructure: a service that runs an image rather than a binary of the workspace.
fn is_infrastructure(service: &Service) -> bool {
    service.image.is_some()
}

fn service_docs(
    service: &Service,
    config: &Config,
    source: &Source,
    opts: &Options,
) -> Result<(Vec<Value>, Option<String>), String> {
    let name = &service.name;
    let ns = &opts.namespace;
    let port = port_of(service);
    let image = match (source, source.image_name(name)) {
        (Source::Given(image), _) => image.clone(),
        (_, Some(built)) => crate::containers::image_ref(&opts.image_prefix, built, &opts.tag),
        (_, None) => unreachable!("only given images have no name"),
    };
    let uses_data_dir = service
        .command
        .iter()
        .chain(service.env.values())
        .any(|a| a.contains("{data_dir}"));
    let volume = service
        .kubernetes
        .volume
        .clone()
        .or_else(|| uses_data_dir.then(|| "1Gi".to_string()));
    // Loopback means "this machine" here and "this pod" there: an infrastructure process told
    // to listen on 127.0.0.1 listens on every interface of its pod instead.
    // A program in its own folder is started by its image's CMD.
    let passed = match source {
        Source::Script { .. } => &[][..],
        _ => &service.command[1..],
    };
    let args: Vec<String> = passed
        .iter()
        .map(|a| {
            crate::config::fill_placeholders(
                a,
                port,
                &format!("0.0.0.0:{port}"),
                DATA_DIR,
                "$(MSCTL_INSTANCE)",
            )
            .replace("127.0.0.1", "0.0.0.0")
        })
        .collect();
    let mut env: Vec<Value> = vec![
        json!({"name": "PORT", "value": port.to_string()}),
        json!({"name": "MSCTL_LISTEN", "value": format!("0.0.0.0:{port}")}),
        json!({"name": "MSCTL_SERVICE", "value": name}),
        json!({"name": "MSCTL_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "OTEL_SERVICE_NAME", "value": name}),
        json!({"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "service.instance.id=$(MSCTL_INSTANCE)"}),
        json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": format!("http://{}:4318", dns(COLLECTOR, ns))}),
        json!({"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "http/protobuf"}),
    ];
    if volume.is_some() {
        env.push(json!({"name": "MSCTL_DATA_DIR", "value": DATA_DIR}));
    }
    // Peers: what it depends on, and the infrastructure every service may discover (the bus).
    let mut peers: Vec<&Service> = service
        .depends_on
        .iter()
        .filter_map(|d| config.services.get(d))
        .collect();
    for s in config.services.values() {
        if is_infrastructure(s) && s.name != *name && !peers.iter().any(|p| p.name == s.name) {
            peers.push(s);
        }
    }
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    if !is_infrastructure(service) {
        for peer in peers {
            env.push(json!({
                "name": url_var(&peer.name),
                "value": format!("http://{}:{}", dns(&peer.name, ns), port_of(peer)),
            }));
        }
    }
    // As msctl fills them in when it starts the service: `${VAR}` from this environment (left
    // as written when unset, as `msctl config` shows it), placeholders for the pod.
    for (k, v) in &service.env {
        let v =
            crate::config::expand_vars(v, |n| std::env::var(n).ok()).unwrap_or_else(|_| v.clone());
        let v = crate::config::fill_placeholders(
            &v,
            port,
            &format!("0.0.0.0:{port}"),
            DATA_DIR,
            "$(MSCTL_INSTANCE)",
        );
        env.push(json!({"name": k, "value": v}));
    }
    let probe = |extra: Value| -> Option<Value> {
        if service.job {
            // A job's readiness is its exit.
            return None;
        }
        let mut p = match &service.health {
            Health::Http(path) => json!({"httpGet": {"path": path, "port": "http"}}),
            Health::Tcp => json!({"tcpSocket": {"port": "http"}}),
            Health::None => return None,
        };
        if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
        Some(p)
    };
    let secs = |d: std::time::Duration| d.as_secs_f64().ceil().max(1.0) as u64;
    let k = &service.kubernetes;
    let mut container = json!({
        "name": name,
        "image": image,
        "ports": [{"name": "http", "containerPort": port}],
        "env": env,
        "resources": {
            "requests": {"cpu": k.cpu.as_deref().unwrap_or("50m"), "memory": k.memory.as_deref().unwrap_or("64Mi")},
            "limits": {"cpu": k.cpu_limit.as_deref().unwrap_or("1"), "memory": k.memory_limit.as_deref().unwrap_or("256Mi")},
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    });
    let c = container.as_object_mut().expect("an object");
    if !args.is_empty() {
        c.insert("args".into(), json!(args));
    }
    if let Some(p) = probe(json!({"periodSeconds": secs(service.health_interval)})) {
        c.insert("readinessProbe".into(), p);
    }
    if let Some(p) = probe(json!({
        "periodSeconds": secs(service.health_interval),
        "failureThreshold": service.unhealthy_after,
    })) {
        c.insert("livenessProbe".into(), p);
    }
    if let Some(p) =
        probe(json!({"periodSeconds": 1, "failureThreshold": secs(service.start_timeout)}))
    {
        c.insert("startupProbe".into(), p);
    }
    if volume.is_some() {
        c["volumeMounts"]
            .as_array_mut()
            .expect("a list")
            .push(json!({"name": "data", "mountPath": DATA_DIR}));
    }
    let pod = json!({
        "metadata": {"labels": labels(name)},
        "spec": {
            "terminationGracePeriodSeconds": secs(service.stop_timeout),
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": USER,
                "runAsGroup": USER,
                "fsGroup": USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    });
    if service.job {
        let mut pod = pod;
        pod["spec"]["restartPolicy"] = json!("Never");
        if volume.is_some() {
            pod["spec"]["volumes"]
                .as_array_mut()
                .expect("a list")
                .push(json!({"name": "data", "emptyDir": {}}));
        }
        let job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": ns, "labels": labels(name)},
            "spec": {
                "completions": service.replicas,
                "parallelism": service.replicas,
                "backoffLimit": service.max_restarts,
                "template": pod,
            },
        });
        let mut note = "a job: a Kubernetes Job. Kubernetes starts nothing in order, so what waits for it here does not there: make those retry until its work is done, or run it as their init container".to_string();
        if volume.is_some() {
            note.push_str(
                "; its MSCTL_DATA_DIR is an empty folder there, kept no longer than the Job",
            );
        }
        return Ok((vec![job], Some(note)));
    }
    let (workload, note) = match &volume {
        Some(size) => {
            let note = (service.replicas > 1).then(|| {
                format!(
                    "keeps its data in MSCTL_DATA_DIR (one volume, as SQLite needs one writer host): 1 replica on the cluster, not {}",
                    service.replicas
                )
            });
            (
                json!({
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "metadata": {"name": name, "namespace": ns, "labels": labels(name)},
                    "spec": {
                        "replicas": 1,
                        "serviceName": name,
                        "selector": {"matchLabels": labels(name)},
                        "template": pod,
                        "volumeClaimTemplates": [{
                            "metadata": {"name": "data"},
                            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
                        }],
                    },
                }),
                note.or_else(|| {
                    Some("keeps its data in MSCTL_DATA_DIR: a StatefulSet with a volume there, 1 replica".into())
                }),
            )
        }
        None => (
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns, "labels": labels(name)},
                "spec": {
                    "replicas": service.replicas,
                    "selector": {"matchLabels": labels(name)},
                    "template": pod,
                },
            }),
            None,
        ),
    };
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels(name)},
        "spec": {
            "type": "ClusterIP",
            "selector": labels(name),
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    });
    Ok((vec![workload, svc], note))
}

fn collector(ns: &str) -> Vec<Value> {
    let config = "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 0.0.0.0:4318\n      grpc:\n        endpoint: 0.0.0.0:4317\nexporters:\n  debug: {}\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n    logs:\n      receivers: [otlp]\n      exporters: [debug]\n";
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": COLLECTOR, "namespace": ns, "labels": labels(COLLECTOR)},
            "data": {"config.yaml": config},
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": COLLECTOR, "namespace": ns, "labels": labels(COLLECTOR)},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels(COLLECTOR)},
                "template": {
                    "metadata": {"labels": labels(COLLECTOR)},
                    "spec": {
                        "securityContext": {"runAsNonRoot": true, "runAsUser": USER, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": COLLECTOR,
                            "image": COLLECTOR_IMAGE,
                            "args": ["--config=/conf/config.yaml"],
                            "ports": [{"name": "otlp-http", "containerPort": 4318}, {"name": "otlp-grpc", "containerPort": 4317}],
                            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
                            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": [{"name": "conf", "mountPath": "/conf"}],
                        }],
                        "volumes": [{"name": "conf", "configMap": {"name": COLLECTOR}}],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": COLLECTOR, "namespace": ns, "labels": labels(COLLECTOR)},
            "spec": {
                "type": "ClusterIP",
                "selector": labels(COLLECTOR),
                "ports": [
                    {"name": "otlp-http", "port": 4318, "targetPort": "otlp-http"},
                    {"name": "otlp-grpc", "port": 4317, "targetPort": "otlp-grpc"},
                ],
            },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Config {
        crate::config::parse(
            std::path::Path::new("/p/msctl.toml"),
            r#"
[services.nats]
command = ["nats-server", "-a", "127.0.0.1", "-p", "{port}", "-js", "-sd", "{data_dir}"]
image = "nats:2.10"
health = "tcp"
[services.users]
command = ["target/debug/users"]
replicas = 2
[services.users.kubernetes]
volume = "2Gi"
memory = "32Mi"
[services.gateway]
command = ["target/debug/gateway"]
depends_on = ["users"]
stop_timeout = "5s"
"#,
        )
        .unwrap()
    }

    fn opts() -> Options {
        Options {
            namespace: "shop".into(),
            image_prefix: "reg.example/".into(),
            tag: "v1".into(),
        }
    }

    fn sources(config: &Config) -> BTreeMap<String, Source> {
        let packages: Vec<_> = ["users", "gateway"]
            .into_iter()
            .map(|b| crate::watch::targets::Package {
                name: b.into(),
                dir: format!("/p/services/{b}").into(),
                bins: vec![b.into()],
                path_deps: vec![],
            })
            .collect();
        crate::containers::sources(config, &packages).unwrap()
    }

    #[test]
    fn the_export_is_deterministic_and_complete() {
        let a = export(&sample(), &sources(&sample()), &opts()).unwrap();
        let b = export(&sample(), &sources(&sample()), &opts()).unwrap();
        assert_eq!(a.files, b.files);
        let names: Vec<&str> = a.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "gateway.yaml",
                "kustomization.yaml",
                "namespace.yaml",
                "nats.yaml",
                "otel-collector.yaml",
                "users.yaml"
            ]
        );
        assert_eq!(a.notes.len(), 2, "{:?}", a.notes);
        assert!(
            a.notes[1].contains("1 replica on the cluster, not 2"),
            "{:?}",
            a.notes
        );
    }

    #[test]
    fn services_are_wired_by_dns_and_keep_their_contract() {
        let e = export(&sample(), &sources(&sample()), &opts()).unwrap();
        let gateway = &e.files["gateway.yaml"];
        assert!(
            gateway.contains("image: reg.example/gateway:v1"),
            "{gateway}"
        );
        assert!(
            gateway.contains("value: http://users.shop.svc.cluster.local:8080"),
            "{gateway}"
        );
        assert!(gateway.contains("name: NATS_URL"), "{gateway}");
        assert!(
            gateway.contains("terminationGracePeriodSeconds: 5"),
            "{gateway}"
        );
        assert!(gateway.contains("kind: Deployment"));
        let users = &e.files["users.yaml"];
        assert!(users.contains("kind: StatefulSet") && users.contains("storage: 2Gi"));
        assert!(users.contains("memory: 32Mi"));
        assert!(users.starts_with("# users: exported by msctl"));
        let nats = &e.files["nats.yaml"];
        assert!(nats.contains("image: nats:2.10"));
        assert!(
            nats.contains("- '0.0.0.0'") && !nats.contains("127.0.0.1"),
            "{nats}"
        );
        assert!(
            nats.contains("- /data") && nats.contains("tcpSocket"),
            "{nats}"
        );
    }

    #[test]
    fn peer_variables_are_the_kits() {
        assert_eq!(url_var("users"), "USERS_URL");
        assert_eq!(url_var("user-db"), "USER_DB_URL");
    }
}
