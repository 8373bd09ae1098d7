//! The dependency graph of the services: cycles, start order, stop order.

use super::error::did_you_mean;
use super::{Config, Service};
use std::collections::BTreeMap;

/// A cycle in `depends_on`, as names from a service back to itself.
pub(super) fn find_cycle(services: &BTreeMap<String, Service>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        name: &str,
        services: &BTreeMap<String, Service>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(name) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let from = stack.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(name.to_string(), Mark::Visiting);
        stack.push(name.to_string());
        for dep in &services[name].depends_on {
            if let Some(cycle) = visit(dep, services, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(name.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    services
        .keys()
        .find_map(|name| visit(name, services, &mut marks, &mut Vec::new()))
}

impl Config {
    /// `wanted` and everything they depend on, in start order (dependencies first). Empty means all.
    pub fn start_order(&self, wanted: &[String]) -> Result<Vec<&Service>, String> {
        for w in wanted {
            if !self.services.contains_key(w) {
                let hint = did_you_mean(w, self.services.keys().map(String::as_str))
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "no service `{w}` in {}{hint}; services: {}",
                    self.path.display(),
                    self.services.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let roots: Vec<&String> = if wanted.is_empty() {
            self.services.keys().collect()
        } else {
            wanted.iter().collect()
        };
        let mut order: Vec<&Service> = Vec::new();
        fn add<'a>(name: &str, config: &'a Config, order: &mut Vec<&'a Service>) {
            if order.iter().any(|s| s.name == name) {
                return;
            }
            let service = &config.services[name];
            for dep in &service.depends_on {
                add(dep, config, order);
            }
            order.push(service);
        }
        for r in roots {
            add(r, self, &mut order);
        }
        Ok(order)
    }
}

impl Config {
    /// Service names grouped for stopping: the first group depends on nothing left running.
    pub fn stop_levels(&self) -> Vec<Vec<String>> {
        fn depth(name: &str, config: &Config, memo: &mut BTreeMap<String, usize>) -> usize {
            if let Some(d) = memo.get(name) {
                return *d;
            }
            let d = config.services[name]
                .depends_on
                .iter()
                .map(|dep| depth(dep, config, memo) + 1)
                .max()
                .unwrap_or(0);
            memo.insert(name.to_string(), d);
            d
        }
        let mut memo = BTreeMap::new();
        let mut levels: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for name in self.services.keys() {
            levels
                .entry(depth(name, self, &mut memo))
                .or_default()
                .push(name.clone());
        }
        levels.into_values().rev().collect()
    }
}
