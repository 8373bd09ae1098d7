//! The two manifests a new service is added to: msctl.toml (a `[services.NAME]` table) and the
//! workspace Cargo.toml (a member), edited with toml_edit so comments and layout stay.

use super::ScaffoldError;
use super::templates::{SERVICE_TABLE, Template};
use crate::config::{self, Config};
use std::path::{Path, PathBuf};

/// msctl.toml with `[services.NAME]` added, comments and layout kept, checked as a whole.
pub(super) fn add_service_table(
    config: &Config,
    template: &Template,
    name: &str,
    table: &str,
) -> Result<String, ScaffoldError> {
    let text = std::fs::read_to_string(&config.path).map_err(|e| ScaffoldError::Io {
        path: config.path.display().to_string(),
        message: e.to_string(),
    })?;
    let broken = |message: String| ScaffoldError::Template {
        template: template.name.clone(),
        file: format!("{}/{SERVICE_TABLE}", template.origin),
        message,
    };
    let fragment: toml_edit::DocumentMut = table.parse().map_err(|e: toml_edit::TomlError| {
        broken(format!("it renders to invalid TOML: {}", e.message()))
    })?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        ScaffoldError::Workspace(format!(
            "{} is not valid TOML: {}",
            config.path.display(),
            e.message()
        ))
    })?;
    let mut new_table = fragment.as_table().clone();
    new_table.set_implicit(false);
    new_table.decor_mut().set_prefix("\n");
    let services = doc.entry("services").or_insert_with(|| {
        let mut t = toml_edit::Table::new();
        t.set_implicit(true);
        toml_edit::Item::Table(t)
    });
    let Some(services) = services.as_table_mut() else {
        return Err(ScaffoldError::Workspace(format!(
            "`services` in {} is not a table",
            config.path.display()
        )));
    };
    services.insert(name, toml_edit::Item::Table(new_table));
    let mut edited = doc.to_string();
    if !edited.ends_with('\n') {
        edited.push('\n');
    }
    config::parse(&config.path, &edited)
        .map_err(|e| broken(format!("the msctl.toml it makes is invalid: {}", e.message)))?;
    Ok(edited)
}

/// Whether the root's Cargo.toml makes a workspace a new crate can join.
pub(super) fn is_workspace(root: &Path) -> bool {
    std::fs::read_to_string(root.join("Cargo.toml"))
        .ok()
        .and_then(|text| text.parse::<toml_edit::DocumentMut>().ok())
        .is_some_and(|doc| doc.get("workspace").is_some_and(|w| w.is_table()))
}

/// Whether msctl.toml's `[defaults]` gives a `build` every service shares.
pub(super) fn has_default_build(manifest: &Path) -> bool {
    std::fs::read_to_string(manifest)
        .ok()
        .and_then(|text| text.parse::<toml_edit::DocumentMut>().ok())
        .is_some_and(|doc| doc.get("defaults").and_then(|d| d.get("build")).is_some())
}

/// The workspace Cargo.toml with `services/NAME` added to its members, unless a glob covers it.
pub(super) fn add_workspace_member(
    root: &Path,
    name: &str,
) -> Result<Option<(PathBuf, String)>, ScaffoldError> {
    let path = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|_| {
        ScaffoldError::Workspace(format!(
            "scaffold adds a crate to a Cargo workspace, and there is no {}",
            path.display()
        ))
    })?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        ScaffoldError::Workspace(format!(
            "{} is not valid TOML: {}",
            path.display(),
            e.message()
        ))
    })?;
    let member = format!("services/{name}");
    let Some(members) = doc
        .get_mut("workspace")
        .and_then(|w| w.get_mut("members"))
        .and_then(|m| m.as_array_mut())
    else {
        return Err(ScaffoldError::Workspace(format!(
            "{} has no [workspace] members list",
            path.display()
        )));
    };
    let covered = members
        .iter()
        .filter_map(|m| m.as_str())
        .any(|m| m == member || m.strip_suffix("/*").is_some_and(|dir| dir == "services"));
    if covered {
        return Ok(None);
    }
    members.push(member);
    Ok(Some((path, doc.to_string())))
}

pub(super) fn remove_member(root: &Path, name: &str) -> Result<(), ScaffoldError> {
    let path = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| ScaffoldError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| ScaffoldError::Workspace(e.to_string()))?;
    let member = format!("services/{name}");
    if let Some(members) = doc
        .get_mut("workspace")
        .and_then(|w| w.get_mut("members"))
        .and_then(|m| m.as_array_mut())
    {
        members.retain(|m| m.as_str() != Some(member.as_str()));
    }
    replace_file(&path, &doc.to_string()).map_err(|e| ScaffoldError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

pub(super) fn remove_table(manifest: &Path, name: &str) -> Result<(), ScaffoldError> {
    let text = std::fs::read_to_string(manifest).map_err(|e| ScaffoldError::Io {
        path: manifest.display().to_string(),
        message: e.to_string(),
    })?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| ScaffoldError::Workspace(e.to_string()))?;
    if let Some(services) = doc.get_mut("services").and_then(|s| s.as_table_mut()) {
        services.remove(name);
    }
    replace_file(manifest, &doc.to_string()).map_err(|e| ScaffoldError::Io {
        path: manifest.display().to_string(),
        message: e.to_string(),
    })
}

/// Replaces a file's contents atomically: a reader sees the old file or the new one.
pub(super) fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    msctl_contract::fs::write_atomic(path, text.as_bytes())
}
