//! `msctl logs`: the instances' log files, merged in time order and prefixed as in `up`; `-f`
//! follows them across restarts.

use crate::cli::LogsArgs;
use crate::cmd::Context;
use crate::error::MsctlError;
use crate::log_view::Prefixes;
use crate::project::Project;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often `-f` looks for new lines and new instances.
const POLL: Duration = Duration::from_millis(100);

pub async fn logs(ctx: &Context, args: LogsArgs) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    if let Some(id) = &args.trace {
        return trace_logs(&project, id).await;
    }
    let mut files = instance_logs(&project, &args.services);
    // A name with no logs is a misspelling unless msctl.toml has it; one that has logs is
    // shown even when it has since left msctl.toml.
    let config = ctx.load().ok().map(|(_, config)| config);
    for service in &args.services {
        if files
            .iter()
            .any(|(instance, _)| service_of(instance) == service)
        {
            continue;
        }
        match &config {
            Some(config) if !config.services.contains_key(service) => {
                return Err(MsctlError::unknown_service(service, config).into());
            }
            _ => say!("no logs for `{service}` yet"),
        }
    }
    let prefixes = Prefixes::new(files.iter().map(|(i, _)| i.clone()).collect(), false);
    let show = Show::new(&args, prefixes);
    let mut offsets: HashMap<PathBuf, Position> = HashMap::new();
    let mut sources: Vec<(String, Lines)> = Vec::new();
    for (instance, path) in &files {
        // `-n N` reads the file's end only: a log is up to 16 MiB, and there may be many; a
        // whole file is read a line at a time as the merge needs it.
        let (lines, end): (Lines, u64) = match args.tail {
            Some(n) => {
                let (lines, end) = crate::supervisor::logs::last_lines(path, n);
                (Box::new(lines.into_iter()), end)
            }
            None => {
                let (lines, end) = whole(path);
                // A window in time may reach back past a rotation: the older files first.
                if args.since.is_some() || args.until.is_some() {
                    let mut older: Lines = Box::new(std::iter::empty());
                    for n in (1..=crate::supervisor::logs::LOG_KEEP).rev() {
                        let mut rotated = path.as_os_str().to_owned();
                        rotated.push(format!(".{n}"));
                        older = Box::new(older.chain(whole(Path::new(&rotated)).0));
                    }
                    (Box::new(older.chain(lines)), end)
                } else {
                    (lines, end)
                }
            }
        };
        offsets.insert(
            path.clone(),
            Position {
                offset: end,
                file: file_id(path),
            },
        );
        sources.push((instance.clone(), lines));
    }
    show.print(sources)?;
    if !args.follow {
        return Ok(0);
    }
    loop {
        let running = project.registry().exists();
        files = instance_logs(&project, &args.services);
        let mut sources: Vec<(String, Lines)> = Vec::new();
        for (instance, path) in &files {
            let position = offsets.entry(path.clone()).or_insert(Position {
                offset: 0,
                file: file_id(path),
            });
            sources.push((
                instance.clone(),
                Box::new(follow(path, position).into_iter()),
            ));
        }
        show.print(sources)?;
        // Lines written before the system stopped have been printed above.
        if !running {
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
        if crate::output::reader_gone() {
            return Ok(0);
        }
    }
}

/// How lines are shown: in the order msctl read them across instances, within `--since` and
/// `--until`, with their stamps when `-t` asks.
struct Show {
    prefixes: Prefixes,
    timestamps: bool,
    since: Option<String>,
    until: Option<String>,
}

impl Show {
    fn new(args: &LogsArgs, prefixes: Prefixes) -> Self {
        use crate::supervisor::logs::stamp;
        Self {
            prefixes,
            timestamps: args.timestamps,
            since: args.since.map(stamp),
            until: args.until.map(stamp),
        }
    }

    /// Prints each instance's lines, each in its file's order, merged by stamp: one line of each
    /// is held at a time. A line with no stamp (a log from before stamps) goes with the line
    /// above it.
    fn print(&self, sources: Vec<(String, Lines)>) -> anyhow::Result<()> {
        use crate::supervisor::logs::split_stamp;
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        struct Source {
            instance: String,
            lines: Lines,
            key: String,
        }
        impl Source {
            /// The next line and the time it goes by.
            fn next(&mut self) -> Option<(String, String)> {
                let line = self.lines.next()?;
                if let (Some(stamp), _) = split_stamp(&line) {
                    self.key = stamp.to_string();
                }
                Some((self.key.clone(), line))
            }
        }
        let mut sources: Vec<Source> = sources
            .into_iter()
            .map(|(instance, lines)| Source {
                instance,
                lines,
                key: String::new(),
            })
            .collect();
        // (key, source) of each source's next line; the source index keeps ties in order.
        let mut heap = BinaryHeap::new();
        let mut next: Vec<Option<String>> = vec![None; sources.len()];
        for (i, source) in sources.iter_mut().enumerate() {
            if let Some((key, line)) = source.next() {
                heap.push(Reverse((key, i)));
                next[i] = Some(line);
            }
        }
        while let Some(Reverse((key, i))) = heap.pop() {
            let line = next[i].take().unwrap_or_default();
            if let Some((key, line)) = sources[i].next() {
                heap.push(Reverse((key, i)));
                next[i] = Some(line);
            }
            if self.since.as_ref().is_some_and(|s| key < *s)
                || self.until.as_ref().is_some_and(|u| key >= *u)
            {
                continue;
            }
            let (stamp, text) = split_stamp(&line);
            let shown = match (self.timestamps, stamp) {
                (true, Some(stamp)) => format!("{stamp} {text}"),
                _ => text.to_string(),
            };
            outln!("{}", self.prefixes.line(&sources[i].instance, &shown))?;
        }
        Ok(())
    }
}

/// The lines of the log at `path`, read as they are needed, up to its length now (what comes
/// after is for `-f`), and that length.
fn whole(path: &Path) -> (Lines, u64) {
    match std::fs::File::open(path) {
        Ok(file) => {
            let end = file.metadata().map_or(0, |m| m.len());
            let reader = std::io::BufReader::new(file.take(end));
            let lines = std::io::BufRead::split(reader, b'\n')
                .map_while(Result::ok)
                .map(|l| String::from_utf8_lossy(&l).into_owned());
            (Box::new(lines), end)
        }
        Err(_) => (Box::new(std::iter::empty()), 0),
    }
}

/// One instance's lines, as read from its log.
type Lines = Box<dyn Iterator<Item = String>>;

/// The log records of one trace, across services, in time order, prefixed by instance.
async fn trace_logs(project: &Project, id: &str) -> anyhow::Result<u8> {
    let trace = crate::traces::find(project, id).map_err(MsctlError::NotFound)?;
    let records = crate::traces::logs_of(project, &trace.id);
    if records.is_empty() {
        say!(
            "no log records for trace {}; services export them over OTLP (the kit and the python template do)",
            trace.id
        );
        return Ok(0);
    }
    let prefixes = Prefixes::new(
        records
            .iter()
            .map(|r| r.resource.service_instance_id.clone())
            .collect(),
        false,
    );
    for r in &records {
        outln!(
            "{}",
            prefixes.line(&r.resource.service_instance_id, &crate::traces::log_line(r))
        )?;
    }
    Ok(0)
}

/// The service an instance id (`posts-2`) belongs to.
fn service_of(instance: &str) -> &str {
    instance
        .rsplit_once('-')
        .map_or(instance, |(service, _)| service)
}

/// The instance log files of `services` (every one when empty), in instance order.
pub(crate) fn instance_logs(project: &Project, services: &[String]) -> Vec<(String, PathBuf)> {
    let Ok(dir) = std::fs::read_dir(project.logs_dir()) else {
        return Vec::new();
    };
    let mut found: Vec<(String, u64, PathBuf)> = dir
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let stem = path
                .file_name()?
                .to_str()?
                .strip_suffix(".log")?
                .to_string();
            let (name, index) = stem.rsplit_once('-')?;
            let index: u64 = index.parse().ok()?;
            (services.is_empty() || services.iter().any(|s| s == name))
                .then(|| (stem.clone(), index, path))
        })
        .collect();
    found.sort_by(|a, b| {
        (a.0.rsplit_once('-').map(|x| x.0), a.1).cmp(&(b.0.rsplit_once('-').map(|x| x.0), b.1))
    });
    found
        .into_iter()
        .map(|(stem, _, path)| (stem, path))
        .collect()
}

/// Where `logs -f` has read a log up to: which file (the path is renamed away on rotation)
/// and how far into it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Position {
    pub(crate) offset: u64,
    pub(crate) file: Option<u64>,
}

/// The identity of the file at `path` (its inode), to notice a rotation.
pub(crate) fn file_id(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        std::fs::metadata(path)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// New complete lines of the log at `path`. After a rotation, the rest of the old file (now
/// `<path>.1`) comes first, then the new file from its start, so no line is lost.
pub(crate) fn follow(path: &Path, position: &mut Position) -> Vec<String> {
    let now = file_id(path);
    let mut lines = Vec::new();
    if now.is_some() && now != position.file {
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(".1");
        let rotated = PathBuf::from(rotated);
        if position.file.is_some() && file_id(&rotated) == position.file {
            lines.extend(new_lines(&rotated, &mut position.offset));
        }
        *position = Position {
            offset: 0,
            file: now,
        };
    }
    lines.extend(new_lines(path, &mut position.offset));
    lines
}

/// Complete lines written to `path` since `offset`, which moves past them. A file that shrank was
/// truncated, and is read again from its start.
fn new_lines(path: &Path, offset: &mut u64) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < *offset {
        *offset = 0;
    }
    if len == *offset || file.seek(SeekFrom::Start(*offset)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let Some(last_newline) = buf.iter().rposition(|b| *b == b'\n') else {
        return Vec::new();
    };
    *offset += last_newline as u64 + 1;
    String::from_utf8_lossy(&buf[..last_newline])
        .lines()
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn following_crosses_a_rotation_without_losing_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s-1.log");
        std::fs::write(&path, "one\n").unwrap();
        let mut position = Position {
            offset: 0,
            file: file_id(&path),
        };
        assert_eq!(follow(&path, &mut position), ["one"]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        // Rotated before the follower looked again: `two` is only in the old file now.
        std::fs::rename(&path, dir.path().join("s-1.log.1")).unwrap();
        std::fs::write(&path, "three\n").unwrap();
        assert_eq!(follow(&path, &mut position), ["two", "three"]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"four\n")
            .unwrap();
        assert_eq!(follow(&path, &mut position), ["four"]);
    }
}
