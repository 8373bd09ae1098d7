//! How instance log lines look on a terminal: `users-1 | …`, each instance in its own colour.

use console::Style;

const COLOURS: [fn(Style) -> Style; 6] = [
    Style::cyan,
    Style::yellow,
    Style::green,
    Style::magenta,
    Style::blue,
    Style::red,
];

/// Prefixes for a known set of instances, padded to the longest name.
#[derive(Debug, Clone)]
pub struct Prefixes {
    names: Vec<String>,
    width: usize,
    stderr: bool,
}

impl Prefixes {
    /// `stderr` says which stream the lines go to, so colour follows whether that one is a terminal.
    pub fn new(mut names: Vec<String>, stderr: bool) -> Self {
        names.sort();
        names.dedup();
        let width = names.iter().map(String::len).max().unwrap_or(0);
        Self {
            names,
            width,
            stderr,
        }
    }

    pub fn line(&self, instance: &str, line: &str) -> String {
        let index = self
            .names
            .iter()
            .position(|n| n == instance)
            .unwrap_or_else(|| instance.bytes().map(usize::from).sum());
        let style = COLOURS[index % COLOURS.len()](Style::new());
        let style = if self.stderr {
            style.for_stderr()
        } else {
            style.for_stdout()
        };
        let width = self.width.max(instance.len());
        format!("{} {line}", style.apply_to(format!("{instance:<width$} |")))
    }
}
