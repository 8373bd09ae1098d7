//! The project's `.env` (beside msctl.toml), loaded into msctl's own environment as overmind,
//! honcho and foreman load theirs: its variables fill `${VAR}` in msctl.toml as docker compose's
//! `.env` does, and every instance and build inherits them. A variable already set in the shell
//! wins.

use std::path::Path;

/// Reads the `.env` beside `manifest`, if any: the variables that are not set already, and the
/// first problem. A bad line stops the reading there: what came before is used.
pub fn read(manifest: &Path) -> (Vec<(String, String)>, Option<String>) {
    let Some(path) = manifest.parent().map(|root| root.join(".env")) else {
        return (Vec::new(), None);
    };
    if !path.is_file() {
        return (Vec::new(), None);
    }
    let (vars, problem) = parse(&path);
    let vars = vars
        .into_iter()
        .filter(|(k, _)| std::env::var_os(k).is_none())
        .collect();
    (vars, problem)
}

/// The variables of the file at `path`, as docker compose's `env_file` and `.env` are written
/// (`NAME=value`, quotes, `# comments`, `${NAME}` of lines above), the first of a name kept;
/// and why it could not be read to its end. A bad line stops the reading there.
pub fn parse(path: &Path) -> (Vec<(String, String)>, Option<String>) {
    let shown = path.display();
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return (Vec::new(), Some(format!("cannot read {shown}: {e}"))),
    };
    // Windows editors start a file with a byte order mark, which is no part of the first name.
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&text);
    let mut vars: Vec<(String, String)> = Vec::new();
    for item in dotenvy::from_read_iter(text) {
        match item {
            Ok((key, value)) => {
                if !vars.iter().any(|(k, _)| *k == key) {
                    vars.push((key, value));
                }
            }
            Err(dotenvy::Error::LineParse(fragment, _)) => {
                // The error holds what was left of the line where reading failed.
                let text = String::from_utf8_lossy(text);
                let found = text
                    .lines()
                    .enumerate()
                    .find(|(_, l)| l.contains(fragment.trim()));
                let (place, line) = match found {
                    Some((i, l)) => (format!(":{}", i + 1), l.trim()),
                    None => (String::new(), fragment.trim()),
                };
                let problem = format!(
                    "{shown}{place}: cannot read `{line}`: write NAME=value, with quotes around a value that has spaces; the lines from there on are not used"
                );
                return (vars, Some(problem));
            }
            Err(e) => return (vars, Some(format!("{shown}: {e}"))),
        }
    }
    (vars, None)
}

/// Loads the `.env` beside `manifest` into this process's environment; why part of it could
/// not be read, to be said.
///
/// # Safety
/// No other thread may be running: changing the environment races with any thread that reads
/// it. msctl calls this before it starts its runtime.
pub unsafe fn load(manifest: &Path) -> Option<String> {
    let (vars, problem) = read(manifest);
    for (key, value) in vars {
        // SAFETY: the caller guarantees that this thread is the only one.
        unsafe { std::env::set_var(&key, value) };
    }
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_read_as_compose_reads_them_and_the_shell_wins() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("msctl.toml");
        std::fs::write(
            dir.path().join(".env"),
            "# a comment\nGREETING=\"hello world\"\nQUOTED=\"a # b\"\nSINGLE='${GREETING}'\nREF=${GREETING}!\n\nPATH=/nowhere\nGREETING=again\n",
        )
        .unwrap();
        let (vars, problem) = read(&manifest);
        assert_eq!(problem, None);
        assert_eq!(
            vars,
            [
                ("GREETING", "hello world"),
                ("QUOTED", "a # b"),
                ("SINGLE", "${GREETING}"),
                ("REF", "hello world!"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn a_file_from_a_windows_editor_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.env");
        std::fs::write(&path, "\u{feff}A=1\r\nB=\"two\"\r\n").unwrap();
        assert_eq!(
            parse(&path),
            (
                vec![("A".into(), "1".into()), ("B".into(), "two".into())],
                None
            )
        );
    }

    #[test]
    fn a_bad_line_is_named_and_what_came_before_it_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("msctl.toml");
        std::fs::write(
            dir.path().join(".env"),
            "GOOD=1\nthis is not a variable\nLATER=2\n",
        )
        .unwrap();
        let (vars, problem) = read(&manifest);
        assert_eq!(vars, [("GOOD".to_string(), "1".to_string())]);
        let problem = problem.unwrap();
        assert!(
            problem.ends_with(".env:2: cannot read `this is not a variable`: write NAME=value, with quotes around a value that has spaces; the lines from there on are not used"),
            "{problem}"
        );
        // No file, no variables and nothing to say.
        assert_eq!(read(&dir.path().join("sub/msctl.toml")), (Vec::new(), None));
    }
}
