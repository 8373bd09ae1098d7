//! `msctl export kubernetes`: writes the manifests `kubernetes.rs` makes, and says what it
//! changed on the way (a stateful service held at one replica).

use crate::cli::{ExportArgs, ExportTarget};
use crate::cmd::Context;
use crate::error::MsctlError;
use anyhow::Context as _;

pub async fn export(ctx: &Context, args: ExportArgs) -> anyhow::Result<u8> {
    let (_, config) = ctx.load()?;
    let ExportTarget::Kubernetes {
        out,
        namespace,
        image_prefix,
        tag,
    } = args.target;
    if !crate::config::valid_service_name(&namespace) {
        return Err(MsctlError::Usage(format!(
            "`{namespace}` is not a namespace name: lowercase letters, digits and dashes"
        ))
        .into());
    }
    let root = config.root.clone();
    let bins: Vec<String> =
        tokio::task::spawn_blocking(move || crate::watch::targets::workspace(&root))
            .await
            .unwrap_or_default()
            .into_iter()
            .flat_map(|p| p.bins)
            .collect();
    let options = crate::kubernetes::Options {
        namespace,
        image_prefix,
        tag,
    };
    let export = crate::kubernetes::export(&config, &bins, &options).map_err(MsctlError::Usage)?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    for (name, text) in &export.files {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        outln!("{}", path.display())?;
    }
    for note in &export.notes {
        say!("note: {note}");
    }
    say!("apply with `kubectl apply -k {}`", out.display());
    Ok(0)
}
