//! `msctl dashboard`: the web dashboard's address with its session token, opened in a browser
//! where one can be started (a desktop session); otherwise only printed.

use crate::cli::DashboardArgs;
use crate::cmd::Context;
use std::process::Stdio;

pub async fn dashboard(ctx: &Context, args: DashboardArgs) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    let (registry, _) = crate::running::require(&project).await?;
    let url = registry.supervisor.dashboard_url();
    outln!("{url}")?;
    if !args.no_open && open_in_browser(&url) {
        say!("opened in your browser");
    }
    Ok(0)
}

/// Opens `url` in the desktop's browser, when there is a desktop session; whether it started.
pub fn open_in_browser(url: &str) -> bool {
    let desktop = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    // The dashboard's token is in its address: it goes to the browser as an argument, not
    // through a shell. A browser that cannot start leaves the printed address.
    desktop
        && std::process::Command::new("xdg-open")
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .is_ok()
}
