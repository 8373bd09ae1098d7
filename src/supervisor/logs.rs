//! An instance's output: its stdout and stderr copied line by line, bounded in length and each
//! stamped with the time it was read, to a log file rotated by size (docs/state.md), and to the
//! supervisor's events.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, BufReader};

/// Lines longer than this are split, so one runaway line cannot exhaust memory.
pub const MAX_LINE: usize = 64 * 1024;
/// An instance log is rotated to `<file>.1` past this size…
pub const LOG_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// …and this many old files are kept, `.1` the newest.
pub const LOG_KEEP: u32 = 3;

/// Every line of an instance log starts with the time it was read, UTC to the millisecond, and a
/// space: `2026-11-28T01:02:15.123Z `. Always this width, so that times compare and sort as text.
pub const STAMP_LEN: usize = 24;

/// The stamp for a line read at `at`.
pub fn stamp(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// A stored line's stamp and text. A line with no stamp (a log written before msctl stamped its
/// lines, or a build log) is all text.
pub fn split_stamp(line: &str) -> (Option<&str>, &str) {
    if is_stamped(line.as_bytes()) {
        (Some(&line[..STAMP_LEN]), &line[STAMP_LEN + 1..])
    } else {
        (None, line)
    }
}

fn is_stamped(b: &[u8]) -> bool {
    b.len() > STAMP_LEN
        && b[STAMP_LEN] == b' '
        && b[STAMP_LEN - 1] == b'Z'
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[..4].iter().all(u8::is_ascii_digit)
}

/// A stamp as milliseconds since the Unix epoch.
pub fn stamp_millis(stamp: &str) -> Option<u64> {
    humantime::parse_rfc3339(stamp)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

/// A stored line's text, without its stamp.
pub fn without_stamp(line: &str) -> &str {
    split_stamp(line).1
}

/// Bumped when the logs folder was deleted and made again while msctl runs: every log file is
/// opened again at its path before its next write, so that `msctl logs` shows what comes after.
pub static REOPEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An instance's log file, rotated by size. Shared by the stdout and stderr pumps.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
    /// `REOPEN` when this file was opened.
    opened: u64,
    /// Bytes that could not be written (a full disk) and why, until a write succeeds again.
    lost: Option<(u64, String)>,
}

impl LogFile {
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let opened = REOPEN.load(std::sync::atomic::Ordering::Relaxed);
        let file = msctl_contract::fs::open_private(path, true)?;
        let len = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
            opened,
            lost: None,
        })
    }

    /// Appends one line, stamped, in one write, so appenders in other processes never split it.
    pub fn write_line(&mut self, line: &[u8]) {
        let mut buf = Vec::with_capacity(STAMP_LEN + line.len() + 2);
        buf.extend_from_slice(stamp(std::time::SystemTime::now()).as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(line);
        buf.push(b'\n');
        self.write_lines(&buf);
    }

    /// Appends whole lines, each stamped and ending in a newline, in one write.
    pub fn write_lines(&mut self, lines: &[u8]) {
        if self.opened != REOPEN.load(std::sync::atomic::Ordering::Relaxed)
            && let Ok(fresh) = Self::open(&self.path)
        {
            self.replace(fresh);
        }
        if self.len + lines.len() as u64 > LOG_MAX_BYTES && self.len > 0 {
            self.rotate();
        }
        // Output that could not be written is at least counted, in the file where it belongs.
        let mut out = Vec::new();
        if let Some((bytes, why)) = &self.lost {
            out.extend_from_slice(
                format!(
                    "{} [msctl] --- {bytes} bytes of output were lost here: {why} ---\n",
                    stamp(std::time::SystemTime::now())
                )
                .as_bytes(),
            );
        }
        out.extend_from_slice(lines);
        match self.file.write_all(&out) {
            Ok(()) => {
                self.len += out.len() as u64;
                if self.lost.take().is_some() {
                    LOSING.fetch_sub(1, Ordering::Relaxed);
                    say!("msctl: {} is written again", self.path.display());
                }
            }
            Err(e) => {
                if self.lost.is_none() {
                    LOSING.fetch_add(1, Ordering::Relaxed);
                    say!(
                        "msctl: cannot write {}: {e}; its output is lost until it can",
                        self.path.display()
                    );
                }
                let (bytes, why) = self.lost.get_or_insert((0, e.to_string()));
                // The service's bytes: the stamps were msctl's.
                let stamps = lines
                    .split_inclusive(|b| *b == b'\n')
                    .filter(|l| is_stamped(l))
                    .count()
                    * (STAMP_LEN + 1);
                *bytes += (lines.len() - stamps) as u64;
                *why = e.to_string();
            }
        }
    }

    fn rotate(&mut self) {
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        for n in (1..LOG_KEEP).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        let _ = std::fs::rename(&self.path, numbered(1));
        if let Ok(fresh) = Self::open(&self.path) {
            self.replace(fresh);
        }
    }

    /// Goes on in `fresh`, the file opened again at the path, still counting what was lost.
    fn replace(&mut self, fresh: Self) {
        let lost = self.lost.take();
        *self = fresh;
        self.lost = lost;
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        if self.lost.is_some() {
            LOSING.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Log files in this process that cannot be written now (a full disk).
static LOSING: AtomicUsize = AtomicUsize::new(0);

/// Whether some log file in this process cannot be written now, so that `msctl logs` does not
/// have every line.
pub fn losing() -> bool {
    LOSING.load(Ordering::Relaxed) > 0
}

/// The last `n` lines of the log at `path`, read back from its end, and the length of the file
/// they end at. A log is up to 16 MiB and a page or a failure report wants a few dozen lines; and
/// bytes that are not UTF-8 show as `�` instead of hiding the whole file (`read_to_string` gave
/// nothing at all for a log with one such byte).
pub fn last_lines(path: &std::path::Path, n: usize) -> (Vec<String>, u64) {
    use std::io::{Read, Seek, SeekFrom};
    const CHUNK: u64 = 64 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return (Vec::new(), 0);
    };
    let end = file.metadata().map_or(0, |m| m.len());
    let mut start = end;
    let mut tail: Vec<u8> = Vec::new();
    // n lines need the newline before the first of them too, unless the file starts there.
    while start > 0 && tail.iter().filter(|b| **b == b'\n').count() <= n {
        let from = start.saturating_sub(CHUNK);
        let mut chunk = vec![0; (start - from) as usize];
        if file.seek(SeekFrom::Start(from)).is_err() || file.read_exact(&mut chunk).is_err() {
            break;
        }
        chunk.extend_from_slice(&tail);
        tail = chunk;
        start = from;
    }
    let text = String::from_utf8_lossy(&tail);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        // Begun mid-line.
        lines.remove(0);
    }
    let lines = lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect();
    (lines, end)
}

/// What [`read_bounded_line`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// A whole line, or the last piece of a long one.
    Line,
    /// `max` bytes of a longer line; more of it follows.
    Piece,
    /// The end of the stream, with nothing read.
    End,
}

/// Reads the next line into `buf` (without its newline), or its next `max` bytes if it is longer:
/// a longer line comes out in pieces, as docker's logs split one, so nothing a service writes is
/// lost and memory stays bounded by `max` plus the reader's buffer.
pub async fn read_bounded_line(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Read> {
    use tokio::io::AsyncBufReadExt;
    buf.clear();
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(if buf.is_empty() {
                Read::End
            } else {
                Read::Line
            });
        }
        let room = max.saturating_sub(buf.len());
        // One byte past the room, so a line of exactly `max` bytes is read whole with its newline.
        let part = &chunk[..chunk.len().min(room + 1)];
        if let Some(i) = part.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&part[..i]);
            reader.consume(i + 1);
            return Ok(Read::Line);
        }
        let used = part.len().min(room);
        buf.extend_from_slice(&part[..used]);
        reader.consume(used);
        if buf.len() >= max {
            return Ok(Read::Piece);
        }
    }
}

pub async fn pump(
    stream: impl AsyncRead + Unpin,
    file: Arc<Mutex<LogFile>>,
    instance: String,
    events: super::events::Sender,
) {
    // As large as a pipe holds: a busy service's batch of lines is read, and written to the file,
    // in one go rather than in 8 KiB pieces.
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut buf = Vec::new();
    // The lines already read are written together: a busy service writes thousands a second,
    // and a write each would cost the supervisor more than the service spends making them.
    let mut pending = Vec::new();
    let mut stamps = Stamps::default();
    let mut after_piece = false;
    while let Ok(read @ (Read::Line | Read::Piece)) =
        read_bounded_line(&mut reader, &mut buf, MAX_LINE).await
    {
        // A long line's newline that came after its last full piece ends it; it is no line.
        let ends_split_line = after_piece && buf.is_empty();
        after_piece = read == Read::Piece;
        if ends_split_line {
            continue;
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        stamps.put(&mut pending);
        pending.extend_from_slice(&buf);
        pending.push(b'\n');
        if !reader.buffer().contains(&b'\n') || pending.len() >= PENDING_MAX {
            if let Ok(mut f) = file.lock() {
                f.write_lines(&pending);
            }
            pending.clear();
        }
        events.log(&instance, &buf);
    }
    // A last line cut short by the end of the stream.
    if !pending.is_empty()
        && let Ok(mut f) = file.lock()
    {
        f.write_lines(&pending);
    }
}

/// The stamp of the current millisecond, made once for all the lines read within it: a busy
/// service writes thousands of lines a second.
#[derive(Default)]
struct Stamps {
    millis: u128,
    text: Vec<u8>,
}

impl Stamps {
    fn put(&mut self, out: &mut Vec<u8>) {
        let now = std::time::SystemTime::now();
        let millis = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        if millis != self.millis || self.text.is_empty() {
            self.millis = millis;
            self.text = stamp(now).into_bytes();
            self.text.push(b' ');
        }
        out.extend_from_slice(&self.text);
    }
}

/// Lines gathered before they are written, at most.
const PENDING_MAX: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of a log's `text` without their stamps; panics at a line with none.
    fn unstamped(text: &str) -> String {
        text.lines()
            .map(|line| match split_stamp(line) {
                (Some(_), text) => format!("{text}\n"),
                (None, _) => panic!("a line with no stamp: {line:.80}"),
            })
            .collect()
    }

    #[test]
    fn stamps_sort_as_times_and_are_told_from_text() {
        use std::time::{Duration, UNIX_EPOCH};
        let a = stamp(UNIX_EPOCH + Duration::from_millis(1_764_291_735_009));
        let b = stamp(UNIX_EPOCH + Duration::from_millis(1_764_291_735_010));
        assert_eq!(a, "2025-11-28T01:02:15.009Z");
        assert_eq!(a.len(), STAMP_LEN);
        assert!(a < b);
        assert_eq!(stamp_millis(&b), Some(1_764_291_735_010));
        let line = format!("{a} hello world");
        assert_eq!(split_stamp(&line), (Some(a.as_str()), "hello world"));
        assert_eq!(split_stamp(&format!("{a} ")), (Some(a.as_str()), ""));
        for plain in [
            "hello",
            "",
            "2025-11-28 not a stamp at all, though long enough",
            &a,
        ] {
            assert_eq!(split_stamp(plain), (None, plain));
        }
    }

    #[tokio::test]
    async fn a_huge_line_is_split_without_being_held_whole() {
        // 8 MB on one line, then a short one, then one cut by the end of the stream.
        let mut input = vec![b'x'; 8 * 1000 * 1000 + 10];
        input.extend_from_slice(b"\nnext\nlast");
        let mut reader = BufReader::with_capacity(4096, &input[..]);
        let mut buf = Vec::new();
        for _ in 0..8000 {
            let read = read_bounded_line(&mut reader, &mut buf, 1000)
                .await
                .unwrap();
            assert_eq!((read, buf.len()), (Read::Piece, 1000));
            assert!(buf.capacity() < 16 * 1024, "held {} bytes", buf.capacity());
        }
        let mut rest = Vec::new();
        loop {
            match read_bounded_line(&mut reader, &mut buf, 1000)
                .await
                .unwrap()
            {
                Read::End => break,
                read => rest.push((read, String::from_utf8(buf.clone()).unwrap())),
            }
        }
        assert_eq!(
            rest,
            [
                (Read::Line, "x".repeat(10)),
                (Read::Line, "next".into()),
                (Read::Line, "last".into())
            ]
        );
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_is_one_line_wherever_the_reads_fall() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s-1.log");
        let file = Arc::new(Mutex::new(LogFile::open(&path).unwrap()));
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let (events, _seen) = crate::supervisor::events::channel(true);
        let pump = tokio::spawn(pump(rx, file, "s-1".into(), events));
        let full = "y".repeat(MAX_LINE);
        // Once with its newline in the same read, once with the newline arriving on its own.
        tx.write_all(format!("{full}\n").as_bytes()).await.unwrap();
        tx.write_all(full.as_bytes()).await.unwrap();
        // The second one is in the file as a full piece before its newline is sent.
        let written = 2 * (STAMP_LEN as u64 + 1 + MAX_LINE as u64 + 1);
        for _ in 0..5000 {
            if std::fs::metadata(&path).unwrap().len() >= written {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), written);
        tx.write_all(b"\nz\n").await.unwrap();
        drop(tx);
        pump.await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(unstamped(&text), format!("{full}\n{full}\nz\n"));
    }

    #[tokio::test]
    async fn lines_are_written_together_but_never_held_for_an_unfinished_one() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s-1.log");
        let file = Arc::new(Mutex::new(LogFile::open(&path).unwrap()));
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let (events, mut seen) = crate::supervisor::events::channel(true);
        let pump = tokio::spawn(pump(rx, file, "s-1".into(), events));
        let many: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        tx.write_all(many.as_bytes()).await.unwrap();
        tx.write_all(b"unfinished").await.unwrap();
        // Every whole line is in the file while the last one is still being written.
        for _ in 0..2000 {
            seen.recv().await.unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(unstamped(&text) == many, "not every line is in the file");
        tx.write_all(b" now\r\n").await.unwrap();
        drop(tx);
        pump.await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(unstamped(&text) == format!("{many}unfinished now\n"));
    }

    #[test]
    fn the_last_lines_come_from_the_end_whatever_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s-1.log");
        // 3 MiB of lines, one holding bytes that are not UTF-8, then the ones wanted.
        let mut text = Vec::new();
        for i in 0..100_000 {
            text.extend_from_slice(format!("line {i} of the long log\n").as_bytes());
        }
        text.extend_from_slice(b"bad \xff\xfe bytes\n");
        text.extend_from_slice(b"last one\n");
        std::fs::write(&path, &text).unwrap();
        let (lines, end) = last_lines(&path, 3);
        assert_eq!(
            lines,
            [
                "line 99999 of the long log",
                "bad \u{fffd}\u{fffd} bytes",
                "last one"
            ]
        );
        assert_eq!(end, text.len() as u64);
        // Fewer lines than asked, and no final newline.
        std::fs::write(&path, "one\ntwo").unwrap();
        assert_eq!(last_lines(&path, 5).0, ["one", "two"]);
        assert_eq!(last_lines(&path, 1).0, ["two"]);
        assert!(last_lines(&dir.path().join("none.log"), 3).0.is_empty());
    }

    #[test]
    fn output_that_cannot_be_written_is_counted_in_the_file_once_it_can() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let mut log = LogFile::open(std::path::Path::new("/dev/full")).unwrap();
        log.write_lines(b"one\ntwo\n");
        log.write_lines(b"three\n");
        let (bytes, why) = log.lost.clone().unwrap();
        assert_eq!(bytes, 14);
        assert!(why.contains("No space left on device"), "{why}");
        // So a foreground `up` does not say `msctl logs` has every line.
        assert!(losing());
        // The disk has room again.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s-1.log");
        log.file = std::fs::File::create(&path).unwrap();
        log.write_line(b"four");
        assert_eq!(log.lost, None);
        assert_eq!(
            unstamped(&std::fs::read_to_string(&path).unwrap()),
            format!("[msctl] --- 14 bytes of output were lost here: {why} ---\nfour\n")
        );
    }

    #[test]
    fn logs_rotate_and_keep_a_few_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s-1.log");
        let mut log = LogFile::open(&path).unwrap();
        let line = vec![b'y'; 1024 * 1024 - 1];
        for _ in 0..(LOG_MAX_BYTES / (1024 * 1024)) * (LOG_KEEP as u64 + 2) {
            log.write_line(&line);
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["s-1.log", "s-1.log.1", "s-1.log.2", "s-1.log.3"]);
        for name in &names {
            let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= LOG_MAX_BYTES, "{name} has {len} bytes");
        }
    }
}
