//! `msctl open`: the system's app, at the gateway's address (where the gateway leads to the web
//! service's UI), printed and opened in a browser where one can be started.

use crate::cli::OpenArgs;
use crate::cmd::Context;
use crate::error::MsctlError;
use msctl_contract::registry::Registry;

/// The service whose address is the system's front door.
pub const FRONT: &str = "gateway";
/// The service that serves the UI behind it.
pub const UI: &str = "web";

/// `http://ADDRESS/` of a healthy gateway, when the system has a UI behind it.
pub fn app_url(registry: &Registry) -> Option<String> {
    if !registry.services.contains_key(UI) {
        return None;
    }
    registry
        .healthy_addresses(FRONT)
        .first()
        .map(|(_, address)| format!("http://{address}/"))
}

pub async fn open(ctx: &Context, args: OpenArgs) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    let (registry, _) = crate::running::require(&project).await?;
    let Some(url) = app_url(&registry) else {
        return Err(MsctlError::Unreachable(format!(
            "no app to open: `msctl open` opens a healthy `{FRONT}` with a `{UI}` service behind it; running: {}",
            registry.services.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
        .into());
    };
    outln!("{url}")?;
    if !args.no_open && crate::cmd::dashboard::open_in_browser(&url) {
        say!("opened in your browser");
    }
    Ok(0)
}
