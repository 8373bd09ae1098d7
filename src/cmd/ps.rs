//! `msctl ps`: the instances, from the registry, even when the supervisor has died.

use crate::cli::PsArgs;
use crate::cmd::Context;
use crate::running::{self, System};
use crate::table;
use msctl_contract::registry::InstanceState;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub async fn ps(ctx: &Context, args: PsArgs) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    // A misspelt name is an error, not an empty table; with msctl.toml unreadable the registry
    // is all there is to go by.
    if let Ok((_, config)) = ctx.load() {
        super::check_names(&config, &args.services)?;
    }
    let (registry, stale) = match running::inspect(&project).await? {
        System::NotRunning => {
            if args.json {
                outln!("[]")?;
            } else {
                say!("nothing is running in {}", project.root.display());
            }
            return Ok(0);
        }
        System::Running { registry, .. } => (registry, false),
        System::Unresponsive { registry } => {
            say!("warning: {}", running::unresponsive(&registry));
            (registry, false)
        }
        System::Stale { registry } => (registry, true),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut rows = Vec::new();
    let mut objects = Vec::new();
    // What each instance's process group uses now, read once for all of them.
    let usage = crate::supervisor::process::usage_by_group();
    let wanted = |service: &String| args.services.is_empty() || args.services.contains(service);
    for (service, entry) in registry.services.iter().filter(|(s, _)| wanted(s)) {
        for i in &entry.instances {
            // A dead supervisor's registry still says `healthy`; what counts is whether the
            // process is there, and it is the supervisor's own instance.
            let state = if stale {
                match i.pid {
                    Some(pid)
                        if crate::supervisor::process::is_instance(
                            pid,
                            &i.id,
                            &project.registry(),
                        ) =>
                    {
                        "orphaned".to_string()
                    }
                    _ => "gone".to_string(),
                }
            } else if entry.build_failed.is_some() {
                // The instance serves the last good build; the newest code did not compile.
                format!("{}, build failed", i.state)
            } else {
                i.state.to_string()
            };
            let running = !stale && i.state != InstanceState::Stopped && i.pid.is_some();
            let uptime = running.then(|| now.saturating_sub(i.started_at_ms));
            let used = i.pid.filter(|_| running).and_then(|pid| usage.get(&pid));
            objects.push(json!({
                "service": service,
                "instance": i.id,
                "pid": i.pid,
                "address": i.address,
                "state": state,
                "uptime_ms": uptime,
                "cpu_ms": used.map(|u| u.cpu.as_millis() as u64),
                "rss_bytes": used.map(|u| u.rss_bytes),
                "restarts": i.restarts,
                "last_health": i.last_health,
                "reason": i.reason,
                "stale": stale,
                "build_failed": entry.build_failed.as_ref().map(|b| &b.error),
                "watching": registry.supervisor.watching,
            }));
            rows.push(vec![
                service.clone(),
                i.id.clone(),
                i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                if i.address.is_empty() {
                    "-".into()
                } else {
                    i.address.clone()
                },
                state.clone(),
                uptime
                    .map(|u| table::duration(Duration::from_millis(u)))
                    .unwrap_or_else(|| "-".into()),
                used.map_or_else(|| "-".into(), |u| cpu_time(u.cpu)),
                used.map_or_else(|| "-".into(), |u| memory(u.rss_bytes)),
                i.restarts.to_string(),
                i.reason
                    .clone()
                    .or_else(|| entry.build_failed.as_ref().map(|b| b.error.clone()))
                    .or_else(|| i.last_health.clone())
                    .unwrap_or_default(),
            ]);
        }
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&objects)?)?;
    } else {
        outln!(
            "{}",
            table::render(
                &[
                    "SERVICE", "INSTANCE", "PID", "ADDRESS", "STATE", "UPTIME", "CPU", "MEM",
                    "RESTARTS", "HEALTH"
                ],
                &rows
            )
        )?;
    }
    if registry.supervisor.watching && !stale {
        say!(
            "watching for changes: rebuilds and replaces services as their files change (`msctl watch --off` stops it)"
        );
    }
    if stale {
        say!(
            "warning: the supervisor (pid {}) is gone; this is what it left. `msctl down` cleans up.",
            registry.supervisor.pid
        );
    }
    Ok(0)
}

/// CPU time as `ps` users read it: tenths of a second up to a minute, then as an uptime is.
fn cpu_time(d: Duration) -> String {
    if d.as_secs() < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        table::duration(d)
    }
}

/// Resident memory in binary units, three figures or fewer.
fn memory(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1}G", mib / 1024.0)
    } else if mib >= 100.0 {
        format!("{mib:.0}M")
    } else {
        format!("{mib:.1}M")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_and_memory_are_short() {
        assert_eq!(cpu_time(Duration::from_millis(430)), "0.4s");
        assert_eq!(cpu_time(Duration::from_secs(75)), "1m15s");
        assert_eq!(memory(13 * 1024 * 1024 + 400 * 1024), "13.4M");
        assert_eq!(memory(250 * 1024 * 1024), "250M");
        assert_eq!(memory(3 * 1024 * 1024 * 1024), "3.0G");
    }
}
