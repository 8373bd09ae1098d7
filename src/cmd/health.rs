//! `msctl health`: probes every instance now; exit 0 only when all are healthy.

use crate::cli::JsonArg;
use crate::cmd::Context;
use crate::config::Health;
use crate::error::MsctlError;
use crate::running::{self, System};
use crate::supervisor::health::Prober;
use crate::table;
use serde_json::json;

pub async fn health(ctx: &Context, args: JsonArg) -> anyhow::Result<u8> {
    let (project, config) = ctx.load()?;
    // A dead supervisor's instances are not probed: nothing is running, as for every command
    // that needs a running system.
    let registry = match running::inspect(&project).await? {
        System::Running { registry, .. } | System::Unresponsive { registry } => registry,
        other => return Err(running::not_running(&project, &other).into()),
    };
    let prober = Prober::default();
    let mut checks = Vec::new();
    let mut absent = Vec::new();
    for (service, entry) in &registry.services {
        let spec = config
            .services
            .get(service)
            .map(|s| s.health.clone())
            .unwrap_or(Health::Http("/health".into()));
        for i in &entry.instances {
            if i.state == msctl_contract::registry::InstanceState::Absent {
                // Optional and not installed: said, and not counted against the system.
                let reason = i.reason.clone().unwrap_or_else(|| "not installed".into());
                absent.push((service.clone(), i.id.clone(), reason, "absent"));
                continue;
            }
            if i.state == msctl_contract::registry::InstanceState::Completed {
                // A job that did its work: nothing answers there, as meant.
                let reason = i
                    .reason
                    .clone()
                    .unwrap_or_else(|| "exited with code 0".into());
                absent.push((service.clone(), i.id.clone(), reason, "completed"));
                continue;
            }
            let prober = prober.clone();
            let spec = spec.clone();
            let (service, id, address) = (service.clone(), i.id.clone(), i.address.clone());
            checks.push(tokio::spawn(async move {
                let result = match address.parse() {
                    Ok(addr) => prober
                        .probe(&spec, addr, &id)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(_) => Err("not running".to_string()),
                };
                (service, id, address, result)
            }));
        }
    }
    let mut results = Vec::new();
    for c in checks {
        results.push(c.await?);
    }
    let unhealthy = results.iter().filter(|r| r.3.is_err()).count();
    if args.json {
        let list: Vec<_> = results
            .iter()
            .map(|(service, id, address, r)| {
                json!({"service": service, "instance": id, "address": address, "healthy": r.is_ok(), "result": match r { Ok(s) | Err(s) => s }})
            })
            .chain(absent.iter().map(|(service, id, reason, state)| {
                json!({"service": service, "instance": id, "address": "", "healthy": null, *state: true, "result": reason})
            }))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?)?;
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|(_, id, address, r)| {
                let (state, detail) = match r {
                    Ok(s) => ("healthy", s.clone()),
                    Err(e) => ("UNHEALTHY", e.clone()),
                };
                vec![id.clone(), address.clone(), state.into(), detail]
            })
            .chain(absent.iter().map(|(_, id, reason, state)| {
                vec![id.clone(), "-".into(), state.to_string(), reason.clone()]
            }))
            .collect();
        outln!(
            "{}",
            table::render(&["INSTANCE", "ADDRESS", "HEALTH", "RESULT"], &rows)
        )?;
    }
    if unhealthy > 0 {
        return Err(MsctlError::Unhealthy {
            unhealthy,
            total: results.len(),
        }
        .into());
    }
    Ok(0)
}
