//! `msctl kill` and `msctl fault`: failure on purpose, so that people can watch the system
//! survive it. `kill` SIGKILLs instances as a crash would; `fault` writes the faults file that
//! callers apply to what they send (docs/resilience.md).

use crate::cli::{FaultArgs, KillArgs};
use crate::cmd::Context;
use crate::config::Config;
use crate::error::MsctlError;
use msctl_contract::fault::{Fault, Faults};
use msctl_contract::registry::Registry;

pub async fn kill(ctx: &Context, args: KillArgs) -> anyhow::Result<u8> {
    let (project, config) = ctx.load()?;
    check_target(&config, &args.target)?;
    let (registry, _) = crate::running::require(&project).await?;
    let victims: Vec<(String, u32)> = instances_of(&registry, &args.target)
        .filter_map(|(id, pid)| Some((id, pid?)))
        .collect();
    if victims.is_empty() {
        return Err(MsctlError::Usage(format!(
            "`{}` has no running instance to kill; `msctl ps` lists them",
            args.target
        ))
        .into());
    }
    for (id, pid) in victims {
        // The pid alone, not its group: a crash of the service's process, which the supervisor
        // sees and handles by the service's restart policy.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        say!("killed {id} (pid {pid})");
    }
    Ok(0)
}

pub async fn fault(ctx: &Context, args: FaultArgs) -> anyhow::Result<u8> {
    let (project, config) = ctx.load()?;
    let path = msctl_contract::fault::path_beside(&project.registry());
    let mut faults: Faults = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if args.target == "clear" {
        let before = faults.faults.len();
        match &args.cleared {
            Some(target) => {
                check_target(&config, target)?;
                faults.faults.retain(|f| f.target != *target);
            }
            None => faults.faults.clear(),
        }
        // Clearing is idempotent, so a script may always run it; what it says is what it did.
        let ended = before - faults.faults.len();
        if ended > 0 {
            write(&path, &faults)?;
        }
        match (&args.cleared, ended) {
            (Some(t), 0) => say!("no fault on {t} to clear"),
            (Some(t), _) => say!("cleared the fault on {t}"),
            (None, 0) => say!("no faults to clear"),
            (None, n) => say!("cleared {n} fault{}", if n == 1 { "" } else { "s" }),
        }
        return Ok(0);
    }
    if let Some(extra) = &args.cleared {
        return Err(MsctlError::Usage(format!(
            "unexpected `{extra}`: one target a fault (`msctl fault posts-2 --error-rate 1`)"
        ))
        .into());
    }
    check_target(&config, &args.target)?;
    if args.delay.is_none() && args.error_rate.is_none() {
        return Err(MsctlError::Usage(
            "a fault needs --delay, --error-rate or both (`msctl fault posts --delay 200ms`)"
                .into(),
        )
        .into());
    }
    let (registry, _) = crate::running::require(&project).await?;
    let until_ms = args.lasting.map(|d| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (now + d).as_millis() as u64
    });
    let fault = Fault {
        target: args.target.clone(),
        delay_ms: args.delay.map_or(0, |d| d.as_millis() as u64),
        error_rate: args.error_rate.unwrap_or(0.0),
        status: args.status,
        until_ms,
    };
    let what = describe(&fault);
    faults.set(fault);
    write(&path, &faults)?;
    let lasting = args
        .lasting
        .map(|d| format!(" for {}", humantime::format_duration(d)))
        .unwrap_or_else(|| " until `msctl fault clear`".into());
    say!("calls to {} now {what}{lasting}", args.target);
    // An instance that is not running (yet) is a fair target, `posts-3` before a scale; but a
    // typo would otherwise pass in silence.
    if !config.services.contains_key(&args.target)
        && instances_of(&registry, &args.target).next().is_none()
    {
        say!(
            "note: {} is not running now; the fault applies once it is",
            args.target
        );
    }
    Ok(0)
}

fn describe(f: &Fault) -> String {
    let mut parts = Vec::new();
    if f.delay_ms > 0 {
        parts.push(format!("wait {} ms", f.delay_ms));
    }
    if f.error_rate > 0.0 {
        parts.push(format!(
            "get {} {:.0}% of the time",
            f.status,
            f.error_rate * 100.0
        ));
    }
    parts.join(", then ")
}

fn write(path: &std::path::Path, faults: &Faults) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let text = serde_json::to_vec_pretty(faults).unwrap_or_default();
    msctl_contract::fs::write_atomic(path, &text)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A target is a service of msctl.toml, or one of its instances (`posts-2`).
fn check_target(config: &Config, target: &str) -> Result<(), MsctlError> {
    if config.services.contains_key(target) {
        return Ok(());
    }
    let service = target
        .rsplit_once('-')
        .filter(|(_, n)| n.parse::<u32>().is_ok_and(|n| n >= 1))
        .map(|(s, _)| s);
    match service {
        Some(s) if config.services.contains_key(s) => Ok(()),
        _ => Err(MsctlError::unknown_service(target, config)),
    }
}

/// The instances `target` names, with their pids.
fn instances_of<'a>(
    registry: &'a Registry,
    target: &'a str,
) -> impl Iterator<Item = (String, Option<u32>)> + 'a {
    registry
        .services
        .iter()
        .flat_map(|(name, entry)| entry.instances.iter().map(move |i| (name, i)))
        .filter(move |(name, i)| *name == target || i.id == target)
        .map(|(_, i)| (i.id.clone(), i.pid))
}
