//! Where a project's runtime state lives: `.msctl/` beside msctl.toml (docs/state.md).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Project {
    /// The folder holding msctl.toml; services run with it as their working folder.
    pub root: PathBuf,
    pub manifest: PathBuf,
    pub state: PathBuf,
}

impl Project {
    pub fn new(manifest: &Path) -> Self {
        let manifest = std::path::absolute(manifest).unwrap_or_else(|_| manifest.to_path_buf());
        let root = manifest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let state = root.join(".msctl");
        Self {
            root,
            manifest,
            state,
        }
    }

    pub fn registry(&self) -> PathBuf {
        self.state.join("registry.json")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state.join("logs")
    }

    pub fn log(&self, instance: &str) -> PathBuf {
        self.logs_dir().join(format!("{instance}.log"))
    }

    /// The span and log store the supervisor's OTLP receiver writes (docs/telemetry.md).
    pub fn telemetry_db(&self) -> PathBuf {
        self.state.join("telemetry.db")
    }

    pub fn data_dir(&self, service: &str) -> PathBuf {
        self.state.join("data").join(service)
    }

    /// Held by the running supervisor, so that two cannot run for one project.
    pub fn lock(&self) -> PathBuf {
        self.state.join("supervisor.lock")
    }

    /// Outside logs/, so that logs/ holds instance logs only.
    pub fn supervisor_log(&self) -> PathBuf {
        self.state.join("supervisor.log")
    }

    pub fn build_log(&self) -> PathBuf {
        self.state.join("build.log")
    }

    /// One JSON line per watch cycle (`msctl watch` follows it).
    pub fn watch_log(&self) -> PathBuf {
        self.state.join("watch.log")
    }

    /// Creates `.msctl/` and its folders, readable by their owner only.
    pub fn create_state_dirs(&self) -> std::io::Result<()> {
        for dir in [self.state.clone(), self.logs_dir(), self.state.join("data")] {
            std::fs::create_dir_all(&dir)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        Ok(())
    }
}
