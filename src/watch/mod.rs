//! Watch mode: when a service's files change, rebuild what the change affects and replace the
//! running instances with no dropped request. A failed build or a new instance that is not
//! healthy leaves the running ones serving. A change to msctl.toml is applied as it stands.

pub mod debounce;
pub mod rebuild;
pub mod report;
pub mod targets;

use crate::supervisor::Supervisor;
use notify::{EventKind, RecursiveMode, Watcher as _};
use report::{Cycle, Outcome};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use targets::Plan;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Watch mode while it is on; dropping it stops watching (and a build it runs).
#[derive(Debug)]
pub struct Watching {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching the files of `sup`'s services.
pub async fn start(sup: Supervisor) -> Result<Watching, String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (plan, watcher) = watch_files(&sup, tx.clone()).await?;
    let task = tokio::spawn(run(sup, plan, watcher, rx, tx));
    Ok(Watching { task })
}

/// Works out what to watch from msctl.toml and the Cargo workspace, and registers it with the
/// operating system's file events (inotify on Linux).
async fn watch_files(
    sup: &Supervisor,
    tx: mpsc::UnboundedSender<PathBuf>,
) -> Result<(Plan, notify::RecommendedWatcher), String> {
    let config = sup.config();
    let root = config.root.clone();
    let packages = tokio::task::spawn_blocking(move || targets::workspace(&root))
        .await
        .unwrap_or_default();
    let plan = Plan::new(&config, &packages);
    for (service, why) in &plan.unwatched {
        say!("msctl watch: `{service}` is not watched: {why}");
    }
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads and opens change nothing.
        if let Ok(event) = event
            && !matches!(event.kind, EventKind::Access(_))
        {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })
    .map_err(|e| format!("cannot watch files: {e}"))?;
    let (recursive, shallow) = plan.roots();
    for (dirs, mode) in [
        (recursive, RecursiveMode::Recursive),
        (shallow, RecursiveMode::NonRecursive),
    ] {
        for dir in dirs.iter().filter(|d| d.exists()) {
            watcher.watch(dir, mode).map_err(|e| {
                format!(
                    "cannot watch {}: {e}{}",
                    dir.display(),
                    if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                        "; raise fs.inotify.max_user_watches (sysctl) or narrow `watch` in msctl.toml"
                    } else {
                        ""
                    }
                )
            })?;
        }
    }
    Ok((plan, watcher))
}

/// The cycles: a burst of changes, then msctl.toml applied, then a rebuild and replacement.
async fn run(
    sup: Supervisor,
    plan: Plan,
    watcher: notify::RecommendedWatcher,
    mut rx: mpsc::UnboundedReceiver<PathBuf>,
    tx: mpsc::UnboundedSender<PathBuf>,
) {
    // The watcher lives beside its plan: events stop when it is dropped.
    let mut watched = (plan, watcher);
    loop {
        let plan = &watched.0;
        let relevant = |p: &Path| plan.is_manifest(p) || !plan.affected(p).is_empty();
        let Some(batch) =
            debounce::next_batch(&mut rx, debounce::QUIET, debounce::LONGEST, relevant).await
        else {
            return;
        };
        let waited = batch.waited.as_millis() as u64;
        let workspace_changed = batch
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == "Cargo.toml"));
        if batch.paths.iter().any(|p| plan.is_manifest(p)) {
            let cycle = apply_manifest(&sup, waited).await;
            let applied = cycle.outcome == Outcome::Applied;
            sup.report(cycle);
            if !applied {
                continue;
            }
        }
        let mut changed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for path in batch.paths.iter().filter(|p| !plan.is_manifest(p)) {
            let shown = path
                .strip_prefix(&plan.root)
                .unwrap_or(path)
                .display()
                .to_string();
            for service in plan.affected(path) {
                changed
                    .entry(service.to_string())
                    .or_default()
                    .push(shown.clone());
            }
        }
        // A service stopped with `msctl stop` stays stopped; it gets the new code when started.
        changed.retain(|service, _| sup.is_running(service));
        if !changed.is_empty() {
            let cycle = rebuild_and_replace(&sup, plan, changed, waited).await;
            sup.report(cycle);
        }
        if workspace_changed || batch.paths.iter().any(|p| plan.is_manifest(p)) {
            // New services, new path dependencies: what is watched follows.
            match watch_files(&sup, tx.clone()).await {
                Ok(fresh) => watched = fresh,
                Err(e) => say!("msctl watch: {e}; still watching what was watched before"),
            }
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// Rebuilds the services in `changed` and replaces their instances, dependencies first.
async fn rebuild_and_replace(
    sup: &Supervisor,
    plan: &Plan,
    changed: BTreeMap<String, Vec<String>>,
    debounce_ms: u64,
) -> Cycle {
    let config = sup.config();
    let names: Vec<String> = changed.keys().cloned().collect();
    let files: BTreeSet<String> = changed.into_values().flatten().collect();
    // An editor's or sed's temporary file, created and renamed away within the burst, is not
    // worth naming; a deleted source file is, when it is all that changed.
    let existing: BTreeSet<String> = files
        .iter()
        .filter(|f| plan.root.join(f).exists())
        .cloned()
        .collect();
    let files = if existing.is_empty() { files } else { existing };
    let mut cycle = Cycle::new(
        Outcome::Replaced,
        names.clone(),
        files.into_iter().collect(),
        debounce_ms,
    );
    let services: Vec<&crate::config::Service> = names
        .iter()
        .filter_map(|n| config.services.get(n))
        .collect();
    match build(sup, plan, &services).await {
        Ok(ms) => cycle.build_ms = Some(ms),
        Err((_, error)) => {
            for name in &names {
                sup.store().set_build_failed(
                    name,
                    Some(msctl_contract::registry::BuildFailure {
                        error: error.clone(),
                        at_ms: now_ms(),
                    }),
                );
            }
            cycle.outcome = Outcome::BuildFailed;
            cycle.error = Some(error);
            return cycle;
        }
    }
    for name in &names {
        sup.store().set_build_failed(name, None);
    }
    let order: Vec<String> = config
        .start_order(&names)
        .map(|o| o.into_iter().map(|s| s.name.clone()).collect())
        .unwrap_or_else(|_| names.clone());
    let swap_started = Instant::now();
    let since_ns = now_ns();
    for name in order.iter().filter(|n| names.contains(n)) {
        if let Err(failure) = sup.restart_service(name).await {
            cycle.start_failed(&failure, sup.project());
            break;
        }
        cycle.replaced.extend(sup.instance_ids(name));
    }
    cycle.swap_ms = Some(swap_started.elapsed().as_millis() as u64);
    cycle.failed_requests = sup.failed_requests_since(since_ns).await;
    cycle
}

/// Reads msctl.toml again and brings the system in line with it: added services start, removed
/// ones stop, changed ones are replaced with their new settings (no downtime where the service
/// allows two instances). An invalid file changes nothing.
async fn apply_manifest(sup: &Supervisor, debounce_ms: u64) -> Cycle {
    let before = sup.config();
    let mut cycle = Cycle::new(
        Outcome::Applied,
        vec![],
        vec![crate::config::MANIFEST.to_string()],
        debounce_ms,
    );
    if let Err(e) = sup.reload() {
        cycle.outcome = Outcome::ConfigInvalid;
        cycle.error = Some(e);
        return cycle;
    }
    let after = sup.config();
    let removed: Vec<String> = before
        .services
        .keys()
        .filter(|n| !after.services.contains_key(*n))
        .cloned()
        .collect();
    // A service added with a profile waits, as at `up`, until it is started by name.
    let added: Vec<String> = after
        .services
        .values()
        .filter(|s| !before.services.contains_key(&s.name) && s.profiles.is_empty())
        .map(|s| s.name.clone())
        .collect();
    let changed: Vec<String> = after
        .services
        .iter()
        .filter(|(n, s)| before.services.get(*n).is_some_and(|b| b != *s))
        .map(|(n, _)| n.clone())
        .filter(|n| sup.is_running(n))
        .collect();
    let swap_started = Instant::now();
    let since_ns = now_ns();
    // Dependents of a removed service keep running, as they would after `msctl stop`.
    for name in &removed {
        sup.remove_service(name).await;
        cycle.stopped.push(name.clone());
    }
    // Built first, as `up` would: their build command may have changed too.
    let to_build: Vec<&crate::config::Service> = added
        .iter()
        .chain(&changed)
        .filter_map(|n| after.services.get(n))
        .collect();
    if !to_build.is_empty() {
        let root = after.root.clone();
        let packages = tokio::task::spawn_blocking(move || targets::workspace(&root))
            .await
            .unwrap_or_default();
        let plan = Plan::new(&after, &packages);
        match build(sup, &plan, &to_build).await {
            Ok(ms) => cycle.build_ms = Some(ms),
            Err((services, error)) => {
                cycle.outcome = Outcome::BuildFailed;
                cycle.services = services;
                cycle.error = Some(error);
                return cycle;
            }
        }
    }
    for name in &changed {
        let spec = Arc::new(after.services[name].clone());
        let replicas = spec.replicas;
        let result = sup.replace_service(name, Some(spec)).await;
        let result = match result {
            Ok(()) => sup
                .scale_service(name, msctl_contract::control::Replicas::To(replicas))
                .await
                .map_err(|(_, f)| f),
            Err(f) => Err(f),
        };
        if let Err(failure) = result {
            cycle.services = vec![name.clone()];
            cycle.start_failed(&failure, sup.project());
            return cycle;
        }
        cycle.replaced.extend(sup.instance_ids(name));
    }
    if !added.is_empty() {
        if let Err(failure) = sup.start(&added).await {
            cycle.services = vec![failure.instance.clone()];
            cycle.start_failed(&failure, sup.project());
            return cycle;
        }
        cycle.started = added;
    }
    cycle.services = cycle
        .started
        .iter()
        .chain(&cycle.stopped)
        .chain(&changed)
        .cloned()
        .collect();
    if !changed.is_empty() {
        cycle.swap_ms = Some(swap_started.elapsed().as_millis() as u64);
        cycle.failed_requests = sup.failed_requests_since(since_ns).await;
    }
    cycle
}

/// Builds `services` as `plan` says (one narrowed cargo build for the Cargo ones, each other
/// build command once): how long it took, or the services of the build that failed and its
/// first error.
async fn build(
    sup: &Supervisor,
    plan: &Plan,
    services: &[&crate::config::Service],
) -> Result<u64, (Vec<String>, String)> {
    let with_packages: Vec<_> = services
        .iter()
        .map(|s| (*s, plan.package_of(&s.name)))
        .collect();
    let started = Instant::now();
    for build in rebuild::plan(&with_packages) {
        if let Err(error) = rebuild::run(&plan.root, &build, &sup.project().build_log()).await {
            return Err((build.services, error));
        }
    }
    Ok(started.elapsed().as_millis() as u64)
}

impl Cycle {
    /// The cycle ends on a new instance that did not become healthy: its reason and last lines.
    fn start_failed(
        &mut self,
        failure: &crate::supervisor::StartFailure,
        project: &crate::project::Project,
    ) {
        self.outcome = Outcome::StartFailed;
        self.error = Some(format!("{}: {}", failure.instance, failure.reason));
        self.log_tail = crate::supervisor::logs::last_lines(&project.log(&failure.instance), 8)
            .0
            .iter()
            .map(|l| crate::supervisor::logs::without_stamp(l).to_string())
            .collect();
    }
}
