//! What an instance is started with: its program and arguments, and its environment, each
//! with `${VAR}` expanded and msctl's placeholders filled in. The supervisor's instances and
//! `msctl run` start with the same.

use super::instance::find_program;
use crate::config::Service;
use crate::project::Project;
use std::net::SocketAddr;
use std::path::PathBuf;

/// One start of a service's program, on `addr`, as the instance `id`.
pub struct Launch<'a> {
    pub service: &'a Service,
    pub id: &'a str,
    pub addr: SocketAddr,
    pub project: &'a Project,
    /// The supervisor's OTLP receiver and its token, when one runs.
    pub otlp: Option<&'a (String, String)>,
}

impl Launch<'_> {
    /// The instance's environment: msctl's variables, then the service's own `env`, with
    /// `${VAR}` expanded from msctl's environment and the placeholders filled in, as in `command`.
    pub fn env(&self, mut note: impl FnMut(String)) -> Result<Vec<(String, String)>, String> {
        use msctl_contract::env as var;
        let (p, addr) = (self.project, self.addr);
        let mut env: Vec<(String, String)> = [
            (var::SERVICE, self.service.name.clone()),
            (var::INSTANCE, self.id.to_string()),
            (var::PORT, addr.port().to_string()),
            (var::ADDR, addr.to_string()),
            (var::REGISTRY, p.registry().display().to_string()),
            (
                var::DATA_DIR,
                p.data_dir(&self.service.name).display().to_string(),
            ),
            (var::OTEL_SERVICE_NAME, self.service.name.clone()),
            (
                var::OTEL_RESOURCE_ATTRIBUTES,
                format!("service.instance.id={}", self.id),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // A service whose msctl.toml table names its own collector exports there, and is not
        // given msctl's receiver or its token.
        let own_collector = self
            .service
            .env
            .contains_key(var::OTEL_EXPORTER_OTLP_ENDPOINT);
        if let (Some((endpoint, token)), false) = (self.otlp, own_collector) {
            let delay = super::instance::EXPORT_DELAY_MS.to_string();
            env.extend(
                [
                    (var::OTEL_EXPORTER_OTLP_ENDPOINT, endpoint.clone()),
                    (
                        var::OTEL_EXPORTER_OTLP_PROTOCOL,
                        "http/protobuf".to_string(),
                    ),
                    (
                        var::OTEL_EXPORTER_OTLP_HEADERS,
                        format!("Authorization=Bearer%20{token}"),
                    ),
                    (var::OTEL_BSP_SCHEDULE_DELAY, delay.clone()),
                    (var::OTEL_BLRP_SCHEDULE_DELAY, delay),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
            );
        }
        // `env_file`s, read at each start as compose reads them at each container's creation;
        // one that cannot be read whole fails the start, rather than run it half configured.
        let own: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
        for file in &self.service.env_files {
            let path = p.root.join(file);
            let vars = match crate::dotenv::parse(&path) {
                (vars, None) => vars,
                (_, Some(problem)) => return Err(format!("env_file: {problem}")),
            };
            // A `PORT` in a file shared with other tools must not move the instance off the
            // port msctl gave it: msctl's own variables win (the `env` table may still set them).
            let (theirs, ours): (Vec<_>, Vec<_>) =
                vars.into_iter().partition(|(k, _)| !own.contains(k));
            if !ours.is_empty() {
                let names: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
                note(format!(
                    "{file} sets {}, which msctl sets itself; msctl's value is used",
                    names.join(", ")
                ));
            }
            env.extend(theirs);
        }
        for (name, value) in &self.service.env {
            let value = self
                .resolve(value)
                .map_err(|e| format!("env {name}: {e}"))?;
            env.push((name.clone(), value));
        }
        Ok(env)
    }

    /// Variables of msctl's own environment that an instance must not inherit: per-signal OTLP
    /// endpoints would send its telemetry past msctl, which forwards them there itself.
    pub fn unset(&self) -> Vec<&'static str> {
        use msctl_contract::env as var;
        let own = |k: &str| self.service.env.contains_key(k);
        if self.otlp.is_none() {
            return Vec::new();
        }
        [
            var::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
            var::OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
        ]
        .into_iter()
        .filter(|k| !own(k))
        .collect()
    }

    /// The program and its arguments: `${VAR}` expanded, placeholders filled in, and a bare
    /// program name found on PATH (or in the sbin folders, where Debian puts daemons such as
    /// nats-server, which a user's PATH often lacks).
    pub fn program(&self) -> Result<(PathBuf, Vec<String>), String> {
        let mut argv = self
            .service
            .command
            .iter()
            .map(|a| self.resolve(a))
            .collect::<Result<Vec<_>, _>>()?;
        let program = argv.remove(0);
        Ok((
            find_program(&program, &self.project.root).unwrap_or_else(|| program.into()),
            argv,
        ))
    }

    /// A `command` argument or an `env` value as this instance gets it: `${VAR}` expanded from
    /// msctl's environment, then `{port}`, `{addr}`, `{data_dir}` and `{instance}` filled in.
    pub fn resolve(&self, text: &str) -> Result<String, String> {
        let expanded = crate::config::expand_vars(text, |k| std::env::var(k).ok())?;
        let data_dir = self.project.data_dir(&self.service.name);
        Ok(crate::config::fill_placeholders(
            &expanded,
            self.addr.port(),
            &self.addr.to_string(),
            &data_dir.display().to_string(),
            self.id,
        ))
    }
}
