//! Writing a planned service all or nothing, and taking back what an interrupted run left.

use super::manifests::{remove_member, remove_table, replace_file};
use super::{Plan, ScaffoldError};
use crate::config::Config;
use std::path::Path;

/// Left inside a service folder while scaffold writes the manifests; found by a later run, it
/// means that run was interrupted, and what it added is taken back.
pub const UNFINISHED: &str = ".msctl-scaffold-unfinished";

/// Writes the plan: the service folder appears whole (written aside, then renamed), then the two
/// manifests, each replaced atomically. On any failure what was done is undone.
pub fn apply(plan: &Plan) -> Result<(), ScaffoldError> {
    let io = |path: &Path, e: std::io::Error| ScaffoldError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let parent = plan.service_dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let staging = parent.join(format!(
        ".{}.scaffolding-{}",
        plan.service_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
        for (relative, text) in &plan.files {
            let path = staging.join(relative);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            }
            std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        }
        let marker = staging.join(UNFINISHED);
        std::fs::write(&marker, "").map_err(|e| io(&marker, e))?;
        std::fs::rename(&staging, &plan.service_dir).map_err(|e| io(&plan.service_dir, e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    #[cfg(debug_assertions)]
    if std::env::var("MSCTL_FAULT").is_ok_and(|f| f == "slow-scaffold") {
        // Widens the window between the folder and the manifests, for the interruption test.
        std::thread::sleep(std::time::Duration::from_millis(800));
    }
    let undo_dir = || {
        let _ = std::fs::remove_dir_all(&plan.service_dir);
    };
    let original_cargo = match &plan.cargo {
        Some((path, text)) => {
            let before = std::fs::read_to_string(path).map_err(|e| io(path, e));
            let replaced = before.and_then(|before| {
                replace_file(path, text)
                    .map(|_| before)
                    .map_err(|e| io(path, e))
            });
            match replaced {
                Ok(before) => Some((path.clone(), before)),
                Err(e) => {
                    undo_dir();
                    return Err(e);
                }
            }
        }
        None => None,
    };
    if let Err(e) = replace_file(&plan.manifest.0, &plan.manifest.1) {
        if let Some((path, before)) = original_cargo {
            let _ = replace_file(&path, &before);
        }
        undo_dir();
        return Err(io(&plan.manifest.0, e));
    }
    let marker = plan.service_dir.join(UNFINISHED);
    std::fs::remove_file(&marker).map_err(|e| io(&marker, e))
}

/// Takes back what an interrupted scaffold left: staging folders of msctl processes that are
/// gone, and any service folder still marked unfinished, with its workspace member and its
/// msctl.toml table. Returns what was (or, with `dry_run`, would be) removed.
pub fn recover(config: &Config, dry_run: bool) -> Vec<String> {
    let services = config.root.join("services");
    let mut undone = Vec::new();
    let Ok(entries) = std::fs::read_dir(&services) else {
        return undone;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let stray_staging = file_name
            .strip_prefix('.')
            .and_then(|rest| rest.rsplit_once(".scaffolding-"))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
            .is_some_and(|pid| !crate::supervisor::process::alive(pid));
        if stray_staging {
            if !dry_run {
                let _ = std::fs::remove_dir_all(&path);
            }
            undone.push(format!("left {}", path.display()));
        } else if path.join(UNFINISHED).exists() {
            if !dry_run {
                let _ = remove_member(&config.root, &file_name);
                let _ = remove_table(&config.path, &file_name);
                let _ = std::fs::remove_dir_all(&path);
            }
            undone.push(format!("left the service `{file_name}` half added"));
        }
    }
    undone
}
