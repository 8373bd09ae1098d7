//! `msctl scaffold NAME`: a new service from a template, wired into the workspace and msctl.toml,
//! that builds and runs on the first `msctl up`.

use crate::cli::ScaffoldArgs;
use crate::cmd::Context;
use crate::error::MsctlError;
use crate::scaffold::{self, Request};
use std::time::Duration;

pub async fn scaffold(ctx: &Context, args: ScaffoldArgs) -> anyhow::Result<u8> {
    let (project, config) = ctx.load_to_edit()?;
    if args.list_templates {
        let (all, broken) = scaffold::templates(&project.root);
        let mut rows: Vec<Vec<String>> = all
            .iter()
            .map(|t| vec![t.name.clone(), t.description.clone(), t.origin.clone()])
            .collect();
        rows.extend(broken.iter().map(|(name, e)| {
            let why = match e {
                scaffold::ScaffoldError::Template { file, message, .. } => {
                    format!("{file}: {message}")
                }
                other => other.to_string(),
            };
            vec![
                name.clone(),
                format!("broken: {why}"),
                format!("templates/{name}"),
            ]
        }));
        outln!(
            "{}",
            crate::table::render(&["TEMPLATE", "DESCRIPTION", "FROM"], &rows)
        )?;
        return Ok(0);
    }
    let Some(name) = args.name else {
        return Err(
            MsctlError::Usage("give the new service's name: msctl scaffold NAME".into()).into(),
        );
    };
    for undone in scaffold::recover(&config, args.dry_run) {
        let done = if args.dry_run {
            "a real run takes it back"
        } else {
            "taken back"
        };
        say!("an earlier scaffold was interrupted and {undone}; {done}");
    }
    // What recover took back may have been in the config just read.
    let (project, config) = ctx.load_to_edit()?;
    let request = Request {
        name: name.clone(),
        deps: args.deps,
        port: args.port,
        template: args.template,
    };
    let plan = scaffold::plan(&config, &request).map_err(MsctlError::Scaffold)?;
    let shown = |p: &std::path::Path| {
        p.strip_prefix(&project.root)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    let dir = shown(&plan.service_dir);
    if args.dry_run {
        for (path, text) in &plan.files {
            outln!("--- {dir}/{path}\n{text}")?;
        }
        outln!(
            "--- msctl.toml: add\n[services.{name}]\n{}",
            plan.table.trim_end()
        )?;
        if plan.cargo.is_some() {
            outln!("--- Cargo.toml: add \"{dir}\" to [workspace] members")?;
        }
        say!("dry run: nothing was written");
        return Ok(0);
    }
    // From here to the last manifest, a Ctrl-C or a closed terminal waits: a service is added
    // whole or not at all. (A SIGKILL cannot wait; the next scaffold takes back what it left.)
    let mut signals = crate::supervisor::signals::Signals::install()?;
    let applied = scaffold::apply(&plan);
    // A signal that came while apply ran is seen once the runtime's signal driver has run.
    let interrupted = tokio::time::timeout(Duration::from_millis(20), signals.next())
        .await
        .ok();
    applied.map_err(MsctlError::Scaffold)?;
    say!("created {dir} from the template `{}`:", request.template);
    for (path, _) in &plan.files {
        say!("  {dir}/{path}");
    }
    if plan.cargo.is_some() {
        say!("added {dir} to the workspace members in Cargo.toml");
    }
    say!("added [services.{name}] to msctl.toml");
    if let Some(signal) = interrupted {
        say!("{signal} arrived while writing; the service was added whole, and msctl stops here");
        return Ok(130);
    }
    say!("next: `msctl up`, then `msctl call {name}/hello`");
    Ok(0)
}
