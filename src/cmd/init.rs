//! `msctl init`: writes msctl.toml for the project in the current folder (or at `-f`), from
//! what `init::detect` finds or from an imported Procfile or compose file; says what it found,
//! what it could not import, and what it did not map. Never overwrites without `--force`.

use crate::cli::InitArgs;
use crate::cmd::Context;
use crate::config::{self, MANIFEST};
use crate::error::MsctlError;
use crate::init::{self, Found};
use anyhow::Context as _;
use std::path::{Path, PathBuf};

pub async fn init(ctx: &Context, args: InitArgs) -> anyhow::Result<u8> {
    let target = match &ctx.file {
        Some(f) if f.is_dir() => f.join(MANIFEST),
        Some(f) => f.clone(),
        None => std::env::current_dir()
            .context("cannot read the current folder")?
            .join(MANIFEST),
    };
    let root = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    if target.exists() && !args.force && !args.dry_run {
        return Err(MsctlError::Usage(format!(
            "{} exists already; `msctl init --force` replaces it, `--dry-run` prints what it would write",
            target.display()
        ))
        .into());
    }
    let concurrency: Vec<(String, u32)> = args.concurrency.into_iter().flatten().collect();
    let found = match &args.from {
        Some(file) => import(&root, file, &concurrency)?,
        None => {
            if !concurrency.is_empty() && !root.join("Procfile").is_file() {
                return Err(MsctlError::Usage(
                    "--concurrency is for a Procfile, and there is none here; give --from Procfile"
                        .into(),
                )
                .into());
            }
            let dir = root.clone();
            let mut found = tokio::task::spawn_blocking(move || init::detect::detect(&dir))
                .await
                .context("looking at the folder failed")?;
            if !concurrency.is_empty() {
                let text = std::fs::read_to_string(root_procfile(&target))?;
                found = init::procfile::import(&text, &concurrency);
                found.source = "this folder's Procfile".into();
                init::procfile::add_cargo_build(&mut found, &root);
            }
            found
        }
    };
    let text = init::render(&found);
    // What init writes must be what msctl reads; a failure here is a bug in init.
    config::parse_to_edit(&target, &text).map_err(|e| {
        anyhow::anyhow!(
            "msctl init made an msctl.toml it cannot read ({}); please report it",
            e.message
        )
    })?;
    if args.dry_run {
        crate::output::stdout_bytes(text.as_bytes())?;
    } else {
        write(&target, &text)?;
    }
    for line in init::report(&found) {
        say!("{line}");
    }
    if !args.dry_run {
        say!("wrote {}", target.display());
        if found.services.is_empty() {
            say!("next: `msctl scaffold NAME` adds a service");
        } else {
            say!("next: look at the `# check:` lines, then `msctl up`");
        }
    }
    Ok(0)
}

fn root_procfile(target: &Path) -> PathBuf {
    target.parent().unwrap_or(Path::new(".")).join("Procfile")
}

/// A Procfile or a compose file, told apart by name, then by content.
fn import(root: &Path, file: &Path, concurrency: &[(String, u32)]) -> anyhow::Result<Found> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| MsctlError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let compose = name.ends_with(".yaml") || name.ends_with(".yml");
    if compose {
        if !concurrency.is_empty() {
            return Err(MsctlError::Usage(
                "--concurrency is for a Procfile; a compose file gives `deploy.replicas`".into(),
            )
            .into());
        }
        return Ok(init::compose::import(root, &name, &text).map_err(MsctlError::Usage)?);
    }
    let mut found = init::procfile::import(&text, concurrency);
    found.source = name;
    init::procfile::add_cargo_build(&mut found, root);
    if found.services.is_empty() && found.skipped.is_empty() {
        return Err(MsctlError::Usage(format!(
            "{} has no process types (`web: command`); a compose file must end in .yaml or .yml",
            file.display()
        ))
        .into());
    }
    Ok(found)
}

/// Writes the file whole or not at all: a temporary file beside it, then a rename.
fn write(target: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = target.with_extension("toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, target).with_context(|| format!("cannot write {}", target.display()))
}
