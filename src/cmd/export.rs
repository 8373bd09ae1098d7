//! `msctl export kubernetes|containerfiles`: writes what `kubernetes.rs` and `containers.rs`
//! make, and says what it changed or could not check on the way.

use crate::cli::{ExportArgs, ExportTarget};
use crate::cmd::Context;
use crate::config::Config;
use crate::containers::Source;
use crate::error::MsctlError;
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub async fn export(ctx: &Context, args: ExportArgs) -> anyhow::Result<u8> {
    let (_, config) = ctx.load()?;
    let sources = sources(&config).await?;
    match args.target {
        ExportTarget::Kubernetes {
            out,
            namespace,
            image_prefix,
            tag,
        } => {
            if !crate::config::valid_service_name(&namespace) {
                return Err(MsctlError::Usage(format!(
                    "`{namespace}` is not a namespace name: lowercase letters, digits and dashes"
                ))
                .into());
            }
            let options = crate::kubernetes::Options {
                namespace,
                image_prefix,
                tag,
            };
            let export = crate::kubernetes::export(&config, &sources, &options)
                .map_err(MsctlError::Usage)?;
            write(&out, &export.files)?;
            for note in &export.notes {
                say!("note: {note}");
            }
            say!("apply with `kubectl apply -k {}`", out.display());
        }
        ExportTarget::Containerfiles {
            out,
            image_prefix,
            tag,
        } => {
            let dir_in_project = inside(&config.root, &out);
            let options = crate::containers::Options {
                image_prefix,
                tag,
                dir_in_project: dir_in_project.clone(),
            };
            let export = crate::containers::export(&config, &sources, &options)
                .map_err(MsctlError::Usage)?;
            write(&out, &export.files)?;
            let script = out.join("build.sh");
            make_executable(&script)?;
            for note in &export.notes {
                say!("note: {note}");
            }
            if sources.values().any(|s| matches!(s, Source::Rust { .. })) {
                let root = config.root.clone();
                if let Ok(Some(why)) = tokio::task::spawn_blocking(move || stale_lock(&root)).await
                {
                    say!(
                        "note: the images build with `cargo build --locked`, and Cargo.lock is not up to date ({why}); run `cargo build` or `msctl up` first"
                    );
                }
            }
            match dir_in_project {
                Some(_) => say!("build the images with `{}`", script.display()),
                None => say!(
                    "build the images from the project's root with `{}`",
                    script.display()
                ),
            }
        }
    }
    Ok(0)
}

async fn sources(config: &Config) -> anyhow::Result<BTreeMap<String, Source>> {
    let root = config.root.clone();
    let packages = tokio::task::spawn_blocking(move || crate::watch::targets::workspace(&root))
        .await
        .unwrap_or_default();
    Ok(crate::containers::sources(config, &packages).map_err(MsctlError::Usage)?)
}

fn write(out: &Path, files: &BTreeMap<String, String>) -> anyhow::Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(MsctlError::Usage(format!(
            "--out {} is a file; export writes several files into a folder: give a folder's path (made if missing)",
            out.display()
        ))
        .into());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        outln!("{}", path.display())?;
    }
    Ok(())
}

fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

/// `out` relative to the project's root, when it is inside it.
fn inside(root: &Path, out: &Path) -> Option<String> {
    let out: PathBuf = if out.is_absolute() {
        out.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(out)
    };
    let root = root.canonicalize().ok()?;
    // The folder may not exist yet: canonicalize what does, and keep the rest.
    let mut existing = out.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        rest.push(existing.file_name()?.to_owned());
        existing = existing.parent()?;
    }
    let mut full = existing.canonicalize().ok()?;
    full.extend(rest.iter().rev());
    let relative = full.strip_prefix(&root).ok()?;
    let text = relative.to_str()?.to_string();
    (!text.is_empty()).then_some(text)
}

/// Why `cargo build --locked` would refuse this workspace, if it would: the lock file lacks a
/// package (a service just scaffolded) or disagrees with a manifest.
fn stale_lock(root: &Path) -> Option<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .current_dir(root)
        .stdout(std::process::Stdio::null())
        .output()
        .ok()?;
    if out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stderr);
    text.contains("--locked").then(|| {
        text.lines()
            .find(|l| l.contains("error"))
            .unwrap_or("cargo metadata --locked failed")
            .trim_start_matches("error: ")
            .to_string()
    })
}
