//! The span and log store: one SQLite file, `.msctl/telemetry.db`, written by the supervisor's
//! receiver (one writer thread) and read by `msctl traces`, `trace` and `logs --trace` while the
//! system runs (WAL), or after it stopped. Bounded by size: the oldest spans go first.
//!
//! Everything is laid out in arrival order. A trace is numbered when it is first seen, and
//! spans and log records are found through that number, so that writing touches only the
//! newest pages of each table and index: trace ids are random, and an index on them alone
//! would put every insert on a page of its own, rewritten at every commit. The one index that
//! holds trace ids is partitioned by number (`part`), so that its inserts, too, land in the
//! newest partition; finding a trace by its id looks in each partition, newest first.

use super::convert::LogRecord;
use msctl_contract::span::{KIND_SERVER, Resource, Span, SpanStatus};
use rusqlite::{Connection, OpenFlags, params};
use std::collections::{HashMap, VecDeque};
use std::path::Path;

/// Past this size the oldest fifth of the spans and logs is deleted.
pub const MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Checked every this many inserted spans, not on every insert.
const CHECK_EVERY: u64 = 10_000;
/// The writer's page cache, in KiB.
const CACHE_KIB: i64 = 64 * 1024;
/// WAL pages between checkpoints: 32 MiB of 4 KiB pages.
const WAL_PAGES: i64 = 8192;
/// Traces a partition of the id index holds: 2^12.
const PART_BITS: u32 = 12;
/// The writer remembers the numbers of this many recent traces...
const REMEMBERED: usize = 1 << 16;
/// ...for at most this long; a span of a trace older than that is looked up in the file.
const REMEMBER_NS: u64 = 120_000_000_000;
/// What `PRAGMA user_version` says of this layout.
const LAYOUT: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS traces (
    -- in order of first sight
    no INTEGER PRIMARY KEY,
    -- no >> PART_BITS
    part INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    -- ',gateway,users,': each service once, for an exact match on `,name,`
    services TEXT NOT NULL,
    -- the names of its server spans, one a line: a superset of its route
    routes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_by_id ON traces (part, trace_id);
CREATE INDEX IF NOT EXISTS traces_by_start ON traces (start_ns);
CREATE TABLE IF NOT EXISTS spans (
    id INTEGER PRIMARY KEY,
    trace_no INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    status_message TEXT,
    service TEXT NOT NULL,
    instance TEXT NOT NULL,
    attributes TEXT NOT NULL,
    -- JSON list of the span's events; NULL when it has none
    events TEXT,
    -- the W3C tracestate it was made in, where a sampled trace's weight is; NULL when empty
    trace_state TEXT
);
-- A trace's spans together; and a span sent twice is stored once.
CREATE UNIQUE INDEX IF NOT EXISTS spans_by_trace ON spans (trace_no, span_id);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY,
    trace_no INTEGER,
    time_ns INTEGER NOT NULL,
    trace_id TEXT,
    span_id TEXT,
    severity TEXT NOT NULL,
    body TEXT NOT NULL,
    service TEXT NOT NULL,
    instance TEXT NOT NULL,
    attributes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_trace ON logs (trace_no, time_ns) WHERE trace_no IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// Moves a store of the first layout (spans and logs keyed by trace id) into this one, keeping
/// everything in it.
const FROM_LAYOUT_1: &str = "
ALTER TABLE spans RENAME TO spans_1;
ALTER TABLE traces RENAME TO traces_1;
ALTER TABLE logs RENAME TO logs_1;
DROP INDEX IF EXISTS traces_by_start;
DROP INDEX IF EXISTS logs_by_trace;
";

const FROM_LAYOUT_1_COPY: &str = "
CREATE TEMP TABLE numbers (trace_id TEXT PRIMARY KEY, no INTEGER NOT NULL);
INSERT INTO numbers SELECT trace_id, row_number() OVER (ORDER BY start_ns) FROM traces_1;
INSERT INTO traces (no, part, trace_id, start_ns, end_ns, errors, services, routes)
    SELECT n.no, n.no >> {PART_BITS}, t.trace_id, t.start_ns, t.end_ns, t.errors, t.services, t.routes
    FROM traces_1 t JOIN numbers n USING (trace_id) ORDER BY n.no;
INSERT OR IGNORE INTO spans (trace_no, trace_id, span_id, parent_span_id, name, kind, start_ns,
    end_ns, status_code, status_message, service, instance, attributes, events)
    SELECT n.no, s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_ns, s.end_ns,
        s.status_code, s.status_message, s.service, s.instance, s.attributes, s.events
    FROM spans_1 s JOIN numbers n USING (trace_id) ORDER BY n.no, s.start_ns;
INSERT INTO logs (trace_no, time_ns, trace_id, span_id, severity, body, service, instance,
    attributes)
    SELECT n.no, l.time_ns, l.trace_id, l.span_id, l.severity, l.body, l.service, l.instance,
        l.attributes
    FROM logs_1 l LEFT JOIN numbers n USING (trace_id) ORDER BY l.id;
DROP TABLE spans_1;
DROP TABLE traces_1;
DROP TABLE logs_1;
DROP TABLE numbers;
";

/// The writer's memory of which number each recent trace has, so that a span or log record of
/// a trace already seen joins it without a lookup, and a new one is known to be new.
#[derive(Default)]
struct Numbers {
    by_id: HashMap<u128, i64>,
    /// First sight of each remembered trace, oldest first: (unix ns, id).
    order: VecDeque<(u64, u128)>,
    /// Every trace first seen after this moment is remembered.
    since_ns: u64,
    next: i64,
}

impl Numbers {
    /// The number of trace `trace_id`, for a record of it that began at `at_ns`: remembered,
    /// looked up in the file when the trace may be older than the memory, or a new one. `None`
    /// for an id that is not 32 hex digits.
    fn place(&mut self, db: &Connection, trace_id: &str, at_ns: u64, now_ns: u64) -> Option<i64> {
        let id = id_number(trace_id)?;
        if let Some(&no) = self.by_id.get(&id) {
            return Some(no);
        }
        // A trace first seen before the memory's start may have records that began before it.
        let no = (at_ns <= self.since_ns)
            .then(|| Store::number_of(db, trace_id))
            .flatten()
            .unwrap_or_else(|| {
                self.next += 1;
                self.next - 1
            });
        self.remember(id, no, now_ns);
        Some(no)
    }

    fn remember(&mut self, id: u128, no: i64, now_ns: u64) {
        self.by_id.insert(id, no);
        self.order.push_back((now_ns, id));
        while self.order.len() > REMEMBERED
            || self
                .order
                .front()
                .is_some_and(|(t, _)| now_ns.saturating_sub(*t) > REMEMBER_NS)
        {
            let Some((t, old)) = self.order.pop_front() else {
                break;
            };
            self.by_id.remove(&old);
            self.since_ns = self.since_ns.max(t);
        }
    }
}

/// A trace id as a number, for the writer's memory; `None` when it is not 32 hex digits.
fn id_number(id: &str) -> Option<u128> {
    (id.len() == 32)
        .then(|| u128::from_str_radix(id, 16).ok())
        .flatten()
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One trace's part of a batch, added up before it is written.
#[derive(Default)]
struct TraceSummary {
    start: u64,
    end: u64,
    errors: u32,
    services: Vec<String>,
    routes: Vec<String>,
}

impl TraceSummary {
    fn add(&mut self, s: &Span) {
        self.start = if self.services.is_empty() {
            s.start_time_unix_nano
        } else {
            self.start.min(s.start_time_unix_nano)
        };
        self.end = self.end.max(s.end_time_unix_nano);
        self.errors += u32::from(s.status.code == 2);
        if !self.services.contains(&s.resource.service_name) {
            self.services.push(s.resource.service_name.clone());
        }
        if s.kind == KIND_SERVER && !self.routes.contains(&s.name) {
            self.routes.push(s.name.clone());
        }
    }
}

/// A server span as `msctl top` counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpan {
    pub service: String,
    pub name: String,
    pub duration_ns: u64,
    pub error: bool,
    /// How many requests it stands for: more than one in a sampled trace (`ot=th`).
    pub weight: f64,
}

impl ServerSpan {
    fn read(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            service: r.get(first)?,
            name: r.get(first + 1)?,
            duration_ns: r.get::<_, i64>(first + 2)?.max(0) as u64,
            error: r.get::<_, i64>(first + 3)? == 2,
            weight: msctl_contract::sampling::adjusted_count(
                r.get::<_, Option<String>>(first + 4)?.as_deref(),
            ),
        })
    }
}

/// One call from the span store, as the service map draws it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub service: String,
    pub kind: u8,
    pub peer: Option<String>,
    pub subject: Option<String>,
    pub operation: Option<String>,
    pub error: bool,
    /// How many calls it stands for: more than one in a sampled trace (`ot=th`).
    pub weight: f64,
}

/// What `msctl traces` narrows the list to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub service: Option<String>,
    pub route: Option<String>,
    pub errors: bool,
    pub min_duration_ns: u64,
}

/// Whether `e` says the file is not a store at all: overwritten, truncated, damaged.
pub fn is_broken(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

pub struct Store {
    db: Connection,
    since_check: u64,
    numbers: Numbers,
}

impl Store {
    /// Opens the store for writing, creating it (readable by its owner only) if need be, and
    /// bringing a store of an earlier layout to this one.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        if !path.exists() {
            // Created private before SQLite opens it: spans name paths, peers and users' data.
            let _ = msctl_contract::fs::open_private(path, true);
        }
        let mut db = Connection::open(path)?;
        // A reader opening the store at the same moment waits for the set-up, not the reverse.
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.pragma_update(None, "cache_size", -CACHE_KIB)?;
        // A page changed by many commits is copied into the database once per checkpoint, so
        // checkpoints are let grow past SQLite's 4 MiB default.
        db.pragma_update(None, "wal_autocheckpoint", WAL_PAGES)?;
        let layout: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let has = |db: &Connection, table: &str, column: &str| -> rusqlite::Result<bool> {
            db.query_row(
                "SELECT EXISTS(SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
                [table, column],
                |r| r.get(0),
            )
        };
        let tx = db.transaction()?;
        let first_layout = layout < LAYOUT && has(&tx, "spans", "span_id")?;
        if first_layout {
            tx.execute_batch(FROM_LAYOUT_1)?;
            // A store made before spans kept their events gets the column.
            if !has(&tx, "spans_1", "events")? {
                tx.execute_batch("ALTER TABLE spans_1 ADD COLUMN events TEXT")?;
            }
        }
        tx.execute_batch(SCHEMA)?;
        // Layout 2 had no tracestate; the column is added, and old spans count once.
        if !has(&tx, "spans", "trace_state")? {
            tx.execute_batch("ALTER TABLE spans ADD COLUMN trace_state TEXT")?;
        }
        if first_layout {
            tx.execute_batch(&FROM_LAYOUT_1_COPY.replace("{PART_BITS}", &PART_BITS.to_string()))?;
        }
        tx.pragma_update(None, "user_version", LAYOUT)?;
        tx.commit()?;
        if first_layout {
            // The old tables' pages would stay in the file, free, doubling it.
            db.execute_batch("VACUUM")?;
        }
        let last: i64 = db.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(no) FROM traces), 0),
                        COALESCE((SELECT MAX(trace_no) FROM logs WHERE trace_no IS NOT NULL), 0))",
            [],
            |r| r.get(0),
        )?;
        let numbers = Numbers {
            // What was stored before this writer is in the file, not in its memory.
            since_ns: now_ns(),
            next: last + 1,
            ..Numbers::default()
        };
        Ok(Self {
            db,
            since_check: 0,
            numbers,
        })
    }

    /// Why the file at `path` is not a store that can be read (not a database, damaged), if it
    /// is not; `None` when it can be read or does not exist.
    pub fn unreadable(path: &Path) -> Option<String> {
        if !path.exists() {
            return None;
        }
        let db = match Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) {
            Ok(db) => db,
            Err(e) => return Some(e.to_string()),
        };
        let _ = db.busy_timeout(std::time::Duration::from_secs(2));
        db.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .err()
        .filter(|e| !is_busy(e))
        .map(|e| e.to_string())
    }

    /// Opens the store for reading; `None` when nothing was ever stored.
    pub fn open_read(path: &Path) -> Option<Self> {
        if !path.exists() {
            return None;
        }
        let db = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        db.busy_timeout(std::time::Duration::from_secs(2)).ok()?;
        let layout: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).ok()?;
        // A store still being made by the supervisor holds nothing yet; migrating it here would
        // race the supervisor's own set-up, and whichever lost would have no store.
        let made: bool = db
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE name = 'spans')",
                [],
                |r| r.get(0),
            )
            .ok()?;
        if !made {
            return None;
        }
        if layout < LAYOUT {
            // Stored by an earlier msctl: moved to this layout first, as the writer would.
            drop(db);
            drop(Self::open(path).ok()?);
            return Self::open_read(path);
        }
        Some(Self {
            db,
            since_check: 0,
            numbers: Numbers::default(),
        })
    }

    /// Stores spans in one transaction; a span already stored is kept as it was.
    pub fn insert_spans(&mut self, spans: &[Span]) -> rusqlite::Result<()> {
        self.insert(spans, &[])
    }

    pub fn insert_logs(&mut self, logs: &[LogRecord]) -> rusqlite::Result<()> {
        self.insert(&[], logs)
    }

    /// Stores spans and log records in one transaction: one commit, one WAL append.
    pub fn insert(&mut self, spans: &[Span], logs: &[LogRecord]) -> rusqlite::Result<()> {
        let tx = self.db.transaction()?;
        if !spans.is_empty() {
            Self::add_spans(&tx, &mut self.numbers, spans)?;
        }
        if !logs.is_empty() {
            Self::add_logs(&tx, &mut self.numbers, logs)?;
        }
        tx.commit()?;
        self.since_check += spans.len() as u64;
        if self.since_check >= CHECK_EVERY {
            self.since_check = 0;
            self.trim(MAX_BYTES)?;
        }
        Ok(())
    }

    fn add_spans(
        tx: &rusqlite::Transaction<'_>,
        numbers: &mut Numbers,
        spans: &[Span],
    ) -> rusqlite::Result<()> {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO spans (trace_no, trace_id, span_id, parent_span_id, name, kind,
             start_ns, end_ns, status_code, status_message, service, instance, attributes,
             events, trace_state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?;
        // One row a trace, kept up to date as its spans arrive, so that listing and filtering
        // never scan the spans.
        let mut summary = tx.prepare_cached(
            "INSERT INTO traces (no, part, trace_id, start_ns, end_ns, errors, services, routes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ',' || ?7 || ',', ?8)
             ON CONFLICT (no) DO UPDATE SET
               start_ns = MIN(start_ns, excluded.start_ns),
               end_ns = MAX(end_ns, excluded.end_ns),
               errors = errors + excluded.errors,
               services = CASE WHEN instr(services, ',' || ?7 || ',') THEN services
                               ELSE services || ?7 || ',' END,
               routes = CASE WHEN ?8 = '' OR instr(routes, ?8) THEN routes
                             ELSE routes || char(10) || ?8 END",
        )?;
        let now = now_ns();
        // Summaries are added up per trace first: a batch holds several spans of each.
        let mut traces: HashMap<i64, (&str, TraceSummary)> = HashMap::new();
        for s in spans {
            let Some(no) = numbers.place(tx, &s.trace_id, s.start_time_unix_nano, now) else {
                continue;
            };
            let fresh = insert.execute(params![
                no,
                s.trace_id,
                s.span_id,
                s.parent_span_id,
                s.name,
                s.kind,
                s.start_time_unix_nano as i64,
                s.end_time_unix_nano as i64,
                s.status.code,
                s.status.message,
                s.resource.service_name,
                s.resource.service_instance_id,
                serde_json::to_string(&s.attributes).unwrap_or_default(),
                (!s.events.is_empty())
                    .then(|| serde_json::to_string(&s.events).unwrap_or_default()),
                s.trace_state,
            ])?;
            if fresh > 0 {
                traces
                    .entry(no)
                    .or_insert_with(|| (&s.trace_id, TraceSummary::default()))
                    .1
                    .add(s);
            }
        }
        for (no, (trace_id, t)) in traces {
            for (i, service) in t.services.iter().enumerate() {
                // The first row carries the times and counts; the rest add a service each.
                let first = i == 0;
                summary.execute(params![
                    no,
                    no >> PART_BITS,
                    trace_id,
                    t.start as i64,
                    t.end as i64,
                    if first { t.errors as i64 } else { 0 },
                    service,
                    if first {
                        t.routes.join("\n")
                    } else {
                        String::new()
                    },
                ])?;
            }
        }
        Ok(())
    }

    fn add_logs(
        tx: &rusqlite::Transaction<'_>,
        numbers: &mut Numbers,
        logs: &[LogRecord],
    ) -> rusqlite::Result<()> {
        let mut insert = tx.prepare_cached(
            "INSERT INTO logs (trace_no, time_ns, trace_id, span_id, severity, body, service,
             instance, attributes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let now = now_ns();
        for l in logs {
            // A record can come before its trace's spans: it numbers the trace.
            let no = l
                .trace_id
                .as_deref()
                .and_then(|trace_id| numbers.place(tx, trace_id, l.time_unix_nano, now));
            insert.execute(params![
                no,
                l.time_unix_nano as i64,
                l.trace_id,
                l.span_id,
                l.severity,
                l.body,
                l.resource.service_name,
                l.resource.service_instance_id,
                serde_json::to_string(&l.attributes).unwrap_or_default(),
            ])?;
        }
        Ok(())
    }

    /// The number a stored trace has, by its id: the newest of its rows. (Log records that
    /// numbered a trace none of whose spans came are not looked for: that needs a scan.)
    fn number_of(db: &Connection, trace_id: &str) -> Option<i64> {
        Self::numbers_of(db, trace_id, trace_id, 1)
            .ok()
            .and_then(|found| found.into_iter().next().map(|(no, _)| no))
    }

    /// Traces whose id lies in `from..=to`, newest first, at most `limit`: each partition of
    /// the id index is looked in, in one statement (one read transaction).
    fn numbers_of(
        db: &Connection,
        from: &str,
        to: &str,
        limit: usize,
    ) -> rusqlite::Result<Vec<(i64, String)>> {
        let mut q = db.prepare_cached(
            "WITH RECURSIVE
               -- Two subqueries: SQLite answers a lone MIN or MAX from the key, both at once by a scan.
               bounds(low, high) AS (
                 SELECT (SELECT MIN(no) FROM traces) >> ?1, (SELECT MAX(no) FROM traces) >> ?1),
               parts(part) AS (
                 SELECT high FROM bounds WHERE high IS NOT NULL
                 UNION ALL
                 SELECT part - 1 FROM parts, bounds WHERE part > low)
             SELECT t.no, t.trace_id FROM parts CROSS JOIN traces t
             WHERE t.part = parts.part AND t.trace_id BETWEEN ?2 AND ?3
             ORDER BY t.no DESC LIMIT ?4",
        )?;
        let rows = q.query_map(params![PART_BITS, from, to, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        rows.collect()
    }

    /// Adds to a counter, such as the spans the receiver had to drop.
    pub fn add(&self, counter: &str, n: u64) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT INTO counters (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            params![counter, n as i64],
        )?;
        Ok(())
    }

    pub fn counter(&self, counter: &str) -> u64 {
        self.db
            .query_row(
                "SELECT value FROM counters WHERE name = ?1",
                [counter],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v as u64)
            .unwrap_or(0)
    }

    /// How many spans are stored.
    pub fn span_count(&self) -> u64 {
        self.db
            .query_row("SELECT COUNT(*) FROM spans", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .unwrap_or(0)
    }

    /// The spans of the `limit` most recent traces (by their first span's start).
    pub fn recent_spans(&self, limit: usize) -> rusqlite::Result<Vec<Span>> {
        self.spans_where(
            "trace_no IN (SELECT no FROM traces ORDER BY start_ns DESC LIMIT ?1)",
            params![limit as i64],
        )
    }

    /// Ids of traces, newest first, that may match `filter` (it narrows; the caller checks
    /// exactly), `limit` of them after skipping `offset`.
    pub fn candidates(
        &self,
        filter: &Filter,
        limit: usize,
        offset: usize,
    ) -> rusqlite::Result<Vec<String>> {
        Ok(self
            .candidate_rows(filter, limit, offset)?
            .into_iter()
            .map(|(_, id)| id)
            .collect())
    }

    /// The spans of each trace `candidates` gives, found by number: a list never looks a trace
    /// up by its id.
    pub fn candidate_traces(
        &self,
        filter: &Filter,
        limit: usize,
        offset: usize,
    ) -> rusqlite::Result<Vec<Vec<Span>>> {
        self.candidate_rows(filter, limit, offset)?
            .into_iter()
            .map(|(no, _)| self.spans_where("trace_no = ?1", params![no]))
            .collect()
    }

    fn candidate_rows(
        &self,
        filter: &Filter,
        limit: usize,
        offset: usize,
    ) -> rusqlite::Result<Vec<(i64, String)>> {
        let mut q = self.db.prepare_cached(
            "SELECT no, trace_id FROM traces
             WHERE (?1 IS NULL OR instr(services, ',' || ?1 || ','))
               AND (?2 IS NULL OR instr(routes, ?2))
               AND (NOT ?3 OR errors > 0)
               AND (end_ns - start_ns >= ?4)
             ORDER BY start_ns DESC LIMIT ?5 OFFSET ?6",
        )?;
        let rows = q.query_map(
            params![
                filter.service,
                filter.route,
                filter.errors,
                filter.min_duration_ns as i64,
                limit as i64,
                offset as i64
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        rows.collect()
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> rusqlite::Result<Vec<Span>> {
        // A trace whose spans came further apart than the writer remembers has two numbers.
        let mut spans = Vec::new();
        for (no, _) in Self::numbers_of(&self.db, trace_id, trace_id, 4)? {
            spans.extend(self.spans_where("trace_no = ?1", params![no])?);
        }
        Ok(spans)
    }

    /// Every server span of the traces that started at or after `since_ns`: its service, name,
    /// duration and whether it failed.
    pub fn server_spans_since(&self, since_ns: u64) -> rusqlite::Result<Vec<ServerSpan>> {
        let mut q = self.db.prepare_cached(
            "SELECT service, name, end_ns - start_ns, status_code, trace_state FROM spans
             WHERE kind = 2 AND trace_no IN (SELECT no FROM traces WHERE start_ns >= ?1)
             AND start_ns >= ?1",
        )?;
        let rows = q.query_map([since_ns as i64], |r| ServerSpan::read(r, 0))?;
        rows.collect()
    }

    /// Every server span of the traces that started at or after `since_ns`, with its start:
    /// what the dashboard's charts bucket by time.
    pub fn server_spans_timed(&self, since_ns: u64) -> rusqlite::Result<Vec<(u64, ServerSpan)>> {
        let mut q = self.db.prepare_cached(
            "SELECT start_ns, service, name, end_ns - start_ns, status_code, trace_state FROM spans
             WHERE kind = 2 AND trace_no IN (SELECT no FROM traces WHERE start_ns >= ?1)
             AND start_ns >= ?1",
        )?;
        let rows = q.query_map([since_ns as i64], |r| {
            Ok((r.get::<_, i64>(0)?.max(0) as u64, ServerSpan::read(r, 1)?))
        })?;
        rows.collect()
    }

    /// The calls between services since `since_ns`, one per client, producer or consumer span:
    /// the caller, the callee (`peer.service`) or the event subject, and whether it failed.
    pub fn calls_since(&self, since_ns: u64) -> rusqlite::Result<Vec<Call>> {
        let mut q = self.db.prepare_cached(
            "SELECT service, kind, json_extract(attributes, '$.\"peer.service\"'),
                    json_extract(attributes, '$.\"messaging.destination.name\"'),
                    json_extract(attributes, '$.\"messaging.operation.type\"'), status_code,
                    trace_state
             FROM spans
             WHERE kind IN (3, 4, 5)
               AND trace_no IN (SELECT no FROM traces WHERE start_ns >= ?1)
               AND start_ns >= ?1",
        )?;
        let rows = q.query_map([since_ns as i64], |r| {
            Ok(Call {
                service: r.get(0)?,
                kind: r.get(1)?,
                peer: r.get(2)?,
                subject: r.get(3)?,
                operation: r.get(4)?,
                error: r.get::<_, i64>(5)? == 2,
                weight: msctl_contract::sampling::adjusted_count(
                    r.get::<_, Option<String>>(6)?.as_deref(),
                ),
            })
        })?;
        rows.collect()
    }

    /// The newest `limit` spans of the message bus (producer and consumer spans that carry
    /// `messaging.system`), newest first.
    pub fn message_spans(&self, limit: usize) -> rusqlite::Result<Vec<Span>> {
        self.spans_where(
            "kind IN (4, 5) AND json_extract(attributes, '$.\"messaging.system\"') IS NOT NULL
             ORDER BY start_ns DESC LIMIT ?1",
            [limit as i64],
        )
    }

    /// How many requests that started at or after `since_ns` failed somewhere: the traces that
    /// hold a failed server span, each counted once however many services it failed in, and as
    /// many requests as it stands for when it was sampled (`ot=th`).
    pub fn failed_traces_since(&self, since_ns: u64) -> rusqlite::Result<u64> {
        let mut q = self.db.prepare_cached(
            "SELECT MAX(s.trace_state) FROM traces t JOIN spans s ON s.trace_no = t.no
             WHERE t.start_ns >= ?1 AND s.kind = 2 AND s.status_code = 2
             GROUP BY t.trace_id",
        )?;
        let weights = q.query_map([since_ns as i64], |r| {
            Ok(msctl_contract::sampling::adjusted_count(
                r.get::<_, Option<String>>(0)?.as_deref(),
            ))
        })?;
        let mut total = 0.0;
        for w in weights {
            total += w?;
        }
        Ok(total.round() as u64)
    }

    /// The ids of stored traces that start with `prefix` (lowercase hex), at most `limit`.
    pub fn trace_ids(&self, prefix: &str, limit: usize) -> rusqlite::Result<Vec<String>> {
        // `~` sorts after every hex digit.
        let mut ids: Vec<String> = Vec::new();
        for (_, id) in Self::numbers_of(&self.db, prefix, &format!("{prefix}~"), limit + 4)? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.truncate(limit);
        Ok(ids)
    }

    /// The log records of one trace, in time order.
    pub fn logs_of(&self, trace_id: &str) -> rusqlite::Result<Vec<LogRecord>> {
        let numbers: Vec<String> = Self::numbers_of(&self.db, trace_id, trace_id, 4)?
            .into_iter()
            .map(|(no, _)| no.to_string())
            .collect();
        // A trace none of whose spans were stored is found by a scan of the records.
        let by_number = if numbers.is_empty() {
            String::new()
        } else {
            format!("trace_no IN ({}) AND", numbers.join(","))
        };
        let mut q = self.db.prepare(&format!(
            "SELECT time_ns, trace_id, span_id, severity, body, service, instance, attributes
             FROM logs WHERE {by_number} trace_id = ?1 ORDER BY time_ns"
        ))?;
        let rows = q.query_map([trace_id], |r| {
            Ok(LogRecord {
                time_unix_nano: r.get::<_, i64>(0)? as u64,
                trace_id: r.get(1)?,
                span_id: r.get(2)?,
                severity: r.get(3)?,
                body: r.get(4)?,
                resource: Resource {
                    service_name: r.get(5)?,
                    service_instance_id: r.get(6)?,
                },
                attributes: object(&r.get::<_, String>(7)?),
            })
        })?;
        rows.collect()
    }

    fn spans_where(
        &self,
        condition: &str,
        args: impl rusqlite::Params,
    ) -> rusqlite::Result<Vec<Span>> {
        let mut q = self.db.prepare(&format!(
            "SELECT trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code,
             status_message, service, instance, attributes, events, trace_state FROM spans
             WHERE {condition}"
        ))?;
        let rows = q.query_map(args, |r| {
            Ok(Span {
                trace_id: r.get(0)?,
                span_id: r.get(1)?,
                parent_span_id: r.get(2)?,
                name: r.get(3)?,
                kind: r.get(4)?,
                start_time_unix_nano: r.get::<_, i64>(5)? as u64,
                end_time_unix_nano: r.get::<_, i64>(6)? as u64,
                status: SpanStatus {
                    code: r.get(7)?,
                    message: r.get(8)?,
                },
                resource: Resource {
                    service_name: r.get(9)?,
                    service_instance_id: r.get(10)?,
                },
                attributes: object(&r.get::<_, String>(11)?),
                events: r
                    .get::<_, Option<String>>(12)?
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .unwrap_or_default(),
                trace_state: r.get(13)?,
            })
        })?;
        rows.collect()
    }

    /// Deletes the oldest fifth of what is stored while the file is larger than `max`.
    pub fn trim(&mut self, max: u64) -> rusqlite::Result<()> {
        let size = |db: &Connection| -> rusqlite::Result<u64> {
            let pages: i64 = db.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let free: i64 = db.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            let page: i64 = db.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            Ok(((pages - free) * page) as u64)
        };
        if size(&self.db)? <= max {
            return Ok(());
        }
        // The oldest fifth of the traces, by first sight, with their spans; and the oldest fifth
        // of the log records. Each is a range at the start of its table and index. (MIN and MAX
        // are asked one at a time: SQLite reads a lone one from the key, both at once by a scan.)
        let tx = self.db.transaction()?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS cut AS SELECT 0 AS no;
             UPDATE cut SET no = (SELECT low + (high - low) / 5 + 1 FROM
                 (SELECT (SELECT MIN(no) FROM traces) AS low, (SELECT MAX(no) FROM traces) AS high));
             DELETE FROM spans WHERE trace_no < (SELECT no FROM cut);
             DELETE FROM traces WHERE no < (SELECT no FROM cut);
             DELETE FROM logs WHERE id <= (SELECT low + (high - low) / 5 FROM
                 (SELECT (SELECT MIN(id) FROM logs) AS low, (SELECT MAX(id) FROM logs) AS high));",
        )?;
        tx.commit()
    }
}

fn object(text: &str) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: u32, span: u32, start: u64) -> Span {
        let mut attributes = serde_json::Map::new();
        attributes.insert("http.route".into(), "/users/{id}".into());
        Span {
            trace_id: format!("{trace:032x}"),
            span_id: format!("{span:016x}"),
            parent_span_id: None,
            name: "GET /users/{id}".into(),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 5,
            status: SpanStatus {
                code: 0,
                message: None,
            },
            attributes,
            resource: Resource {
                service_name: "users".into(),
                service_instance_id: "users-1".into(),
            },
            events: Vec::new(),
            trace_state: None,
        }
    }

    #[test]
    fn a_sampled_traces_weight_is_kept_and_read_back_and_old_stores_gain_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            // A store of layout 2: no tracestate column.
            let store = Store::open(&path).unwrap();
            store
                .db
                .execute_batch(
                    "ALTER TABLE spans DROP COLUMN trace_state; PRAGMA user_version = 2;",
                )
                .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        let mut weighed = span(1, 1, 1_000);
        weighed.trace_state = Some("ot=th:c".into());
        store.insert_spans(&[weighed, span(2, 1, 1_100)]).unwrap();
        drop(store);
        let store = Store::open_read(&path).unwrap();
        let mut weights: Vec<f64> = store
            .server_spans_since(0)
            .unwrap()
            .iter()
            .map(|s| s.weight)
            .collect();
        weights.sort_by(f64::total_cmp);
        assert_eq!(weights, [1.0, 4.0], "th:c keeps one in four");
        let back = store.trace(&format!("{:032x}", 1)).unwrap();
        assert_eq!(back[0].trace_state.as_deref(), Some("ot=th:c"));
        assert_eq!(store.server_spans_timed(0).unwrap().len(), 2);
    }

    #[test]
    fn failed_requests_are_traces_with_a_failed_server_span_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("t.db")).unwrap();
        let failed = |trace, span, start| {
            let mut s = super::tests::span(trace, span, start);
            s.status.code = 2;
            s
        };
        let mut client_only = failed(5, 1, 2_000);
        client_only.kind = 3;
        store
            .insert_spans(&[
                // Before the window: not counted.
                failed(1, 1, 500),
                // Failed in two services: one request.
                failed(2, 1, 1_000),
                failed(2, 2, 1_001),
                failed(3, 1, 1_500),
                super::tests::span(4, 1, 1_600),
                // A failed client span alone (a retried call) is not a failed request.
                client_only,
            ])
            .unwrap();
        assert_eq!(store.failed_traces_since(1_000).unwrap(), 2);
        assert_eq!(store.failed_traces_since(0).unwrap(), 3);
        assert_eq!(store.failed_traces_since(10_000).unwrap(), 0);
        // A sampled failure kept at one in four stands for four.
        let mut sampled = failed(6, 1, 20_000);
        sampled.trace_state = Some("ot=th:c".into());
        store.insert_spans(&[sampled]).unwrap();
        assert_eq!(store.failed_traces_since(10_000).unwrap(), 4);
    }

    /// The first layout, as a store made before span events had it.
    const LAYOUT_1: &str = "
        CREATE TABLE spans (trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_span_id TEXT,
            name TEXT NOT NULL, kind INTEGER NOT NULL, start_ns INTEGER NOT NULL,
            end_ns INTEGER NOT NULL, status_code INTEGER NOT NULL, status_message TEXT,
            service TEXT NOT NULL, instance TEXT NOT NULL, attributes TEXT NOT NULL,
            PRIMARY KEY (trace_id, span_id)) WITHOUT ROWID;
        CREATE TABLE traces (trace_id TEXT PRIMARY KEY, start_ns INTEGER NOT NULL,
            end_ns INTEGER NOT NULL, errors INTEGER NOT NULL, services TEXT NOT NULL,
            routes TEXT NOT NULL);
        CREATE INDEX traces_by_start ON traces (start_ns);
        CREATE TABLE logs (id INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, trace_id TEXT,
            span_id TEXT, severity TEXT NOT NULL, body TEXT NOT NULL, service TEXT NOT NULL,
            instance TEXT NOT NULL, attributes TEXT NOT NULL);
        CREATE INDEX logs_by_trace ON logs (trace_id, time_ns);
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO traces VALUES ('0000000000000000000000000000000b', 100, 105, 0, ',users,',
            'GET /users/{id}');
        INSERT INTO traces VALUES ('0000000000000000000000000000000a', 50, 55, 0, ',users,',
            'GET /users/{id}');
        INSERT INTO spans VALUES ('0000000000000000000000000000000b', '0000000000000001', NULL,
            'GET /users/{id}', 2, 100, 105, 0, NULL, 'users', 'users-1',
            '{\"http.route\":\"/users/{id}\"}');
        INSERT INTO spans VALUES ('0000000000000000000000000000000a', '0000000000000002', NULL,
            'GET /users/{id}', 2, 50, 55, 0, NULL, 'users', 'users-1', '{}');
        INSERT INTO logs VALUES (1, 101, '0000000000000000000000000000000b', '0000000000000001',
            'INFO', 'request', 'users', 'users-1', '{}');
        INSERT INTO counters VALUES ('dropped_spans', 3);
    ";

    #[test]
    fn a_store_of_the_first_layout_is_moved_to_this_one_with_everything_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("telemetry.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(LAYOUT_1)
            .unwrap();
        let mut store = Store::open(&path).unwrap();
        let b = "0000000000000000000000000000000b";
        let old = span(0xb, 1, 100);
        assert_eq!(store.trace(b).unwrap(), vec![old.clone()]);
        assert_eq!(store.logs_of(b).unwrap().len(), 1);
        assert_eq!(store.counter("dropped_spans"), 3);
        // Numbered by start: the older trace first; new traces come after both.
        assert_eq!(
            store.candidates(&Filter::default(), 10, 0).unwrap(),
            [b.to_string(), format!("{:032x}", 0xa)]
        );
        let mut faulted = span(0xb, 2, 102);
        faulted.events.push(msctl_contract::span::SpanEvent {
            name: "msctl.fault".into(),
            time_unix_nano: 103,
            attributes: [("msctl.fault.aborted".to_string(), true.into())]
                .into_iter()
                .collect(),
        });
        store
            .insert_spans(&[faulted.clone(), span(0xc, 3, 200)])
            .unwrap();
        drop(store);
        let reader = Store::open_read(&path).unwrap();
        assert_eq!(reader.trace(b).unwrap(), vec![old, faulted]);
        let numbers: Vec<i64> = reader
            .db
            .prepare("SELECT no FROM traces ORDER BY start_ns")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(numbers, [1, 2, 3]);
        // Opening it again changes nothing.
        drop(reader);
        let again = Store::open(&path).unwrap();
        assert_eq!(again.span_count(), 4);
    }

    #[test]
    fn a_trace_is_found_by_id_in_any_partition_and_its_late_spans_join_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("telemetry.db");
        let mut store = Store::open(&path).unwrap();
        // Three partitions' worth of traces, the first of which gets a span later on.
        let count = 3 << PART_BITS;
        let spans: Vec<Span> = (1..=count).map(|t| span(t, t, t as u64)).collect();
        store.insert_spans(&spans).unwrap();
        let late = span(1, 99_999, 2);
        store.insert_spans(std::slice::from_ref(&late)).unwrap();
        assert_eq!(store.trace(&spans[0].trace_id).unwrap().len(), 2);
        // A writer that starts afresh does not remember, and looks the trace up in the file.
        drop(store);
        let mut store = Store::open(&path).unwrap();
        let later = span(2, 88_888, 3);
        store.insert_spans(std::slice::from_ref(&later)).unwrap();
        // A span that began after the writer's memory starts is taken for a new trace's: trace
        // 3 gets a second number, and reading it by id gathers both.
        let apart = span(3, 77_777, now_ns() + 3_600_000_000_000);
        store.insert_spans(std::slice::from_ref(&apart)).unwrap();
        let reader = Store::open_read(&path).unwrap();
        assert_eq!(reader.trace(&spans[1].trace_id).unwrap().len(), 2);
        let mut both = reader.trace(&spans[2].trace_id).unwrap();
        both.sort_by_key(|s| s.start_time_unix_nano);
        assert_eq!(both, vec![spans[2].clone(), apart]);
        let last = &spans[count as usize - 1].trace_id;
        assert_eq!(
            reader.trace(last).unwrap(),
            vec![spans[count as usize - 1].clone()]
        );
        assert_eq!(
            reader
                .candidates(&Filter::default(), usize::MAX >> 1, 0)
                .unwrap()
                .len(),
            count as usize + 1,
            "one summary a trace number"
        );
        // Abbreviated ids are found in every partition.
        assert_eq!(
            reader.trace_ids(&last[..31], 5).unwrap(),
            std::slice::from_ref(last)
        );
        assert_eq!(reader.trace_ids(&"0".repeat(31), 100).unwrap().len(), 15);
        assert!(reader.trace(&"f".repeat(32)).unwrap().is_empty());
    }

    #[test]
    fn log_records_that_come_before_their_spans_join_the_trace() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("telemetry.db")).unwrap();
        let s = span(7, 1, 1_000);
        let record = LogRecord {
            time_unix_nano: 1_001,
            trace_id: Some(s.trace_id.clone()),
            span_id: Some(s.span_id.clone()),
            severity: "INFO".into(),
            body: "request".into(),
            resource: s.resource.clone(),
            attributes: serde_json::Map::new(),
        };
        let untraced = LogRecord {
            trace_id: None,
            span_id: None,
            ..record.clone()
        };
        store.insert_logs(&[record.clone(), untraced]).unwrap();
        assert_eq!(store.logs_of(&s.trace_id).unwrap(), vec![record.clone()]);
        store.insert_spans(std::slice::from_ref(&s)).unwrap();
        assert_eq!(store.trace(&s.trace_id).unwrap(), vec![s.clone()]);
        assert_eq!(store.logs_of(&s.trace_id).unwrap(), vec![record]);
    }

    #[test]
    fn spans_round_trip_and_the_newest_traces_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("telemetry.db");
        let mut store = Store::open(&path).unwrap();
        let spans: Vec<Span> = (1..=5).map(|t| span(t, t, t as u64 * 100)).collect();
        store.insert_spans(&spans).unwrap();
        // The same span again is not stored twice.
        store.insert_spans(&spans[..1]).unwrap();
        let reader = Store::open_read(&path).unwrap();
        assert_eq!(
            reader.trace(&spans[0].trace_id).unwrap(),
            vec![spans[0].clone()]
        );
        let recent = reader.recent_spans(2).unwrap();
        let mut ids: Vec<&str> = recent.iter().map(|s| s.trace_id.as_str()).collect();
        ids.sort();
        assert_eq!(
            ids,
            [spans[3].trace_id.as_str(), spans[4].trace_id.as_str()]
        );
        store.add("dropped_spans", 3).unwrap();
        store.add("dropped_spans", 4).unwrap();
        assert_eq!(reader.counter("dropped_spans"), 7);
        assert!(Store::open_read(&dir.path().join("none.db")).is_none());
    }

    #[test]
    fn traces_are_narrowed_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("telemetry.db")).unwrap();
        let mut failing = span(2, 20, 200);
        failing.status.code = 2;
        failing.resource.service_name = "posts".into();
        failing.name = "GET /posts".into();
        store
            .insert_spans(&[
                span(1, 10, 100),
                span(2, 21, 199),
                failing,
                span(3, 30, 300),
            ])
            .unwrap();
        let ids = |f: Filter| store.candidates(&f, 10, 0).unwrap();
        let t = |n: u32| format!("{n:032x}");
        assert_eq!(ids(Filter::default()), [t(3), t(2), t(1)]);
        let errors = Filter {
            errors: true,
            ..Default::default()
        };
        assert_eq!(ids(errors), [t(2)]);
        let posts = Filter {
            service: Some("posts".into()),
            ..Default::default()
        };
        assert_eq!(ids(posts), [t(2)]);
        let pos = Filter {
            service: Some("post".into()),
            ..Default::default()
        };
        assert!(ids(pos).is_empty(), "services match whole names");
        let route = Filter {
            route: Some("/posts".into()),
            ..Default::default()
        };
        assert_eq!(ids(route), [t(2)]);
        let long = Filter {
            min_duration_ns: 6,
            ..Default::default()
        };
        assert_eq!(
            ids(long),
            [t(2)],
            "199..205: the only trace longer than 5 ns"
        );
        assert_eq!(store.candidates(&Filter::default(), 1, 1).unwrap(), [t(2)]);
    }

    #[test]
    fn the_store_is_bounded_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("telemetry.db")).unwrap();
        let spans: Vec<Span> = (1..=5000).map(|t| span(t, t, t as u64)).collect();
        store.insert_spans(&spans).unwrap();
        store.trim(64 * 1024).unwrap();
        let left = store.recent_spans(10_000).unwrap();
        assert!(left.len() < 5000 && left.len() >= 3900, "{}", left.len());
        // The oldest went first.
        assert!(left.iter().all(|s| s.start_time_unix_nano > 900));
        assert_eq!(
            store
                .candidates(&Filter::default(), 10_000, 0)
                .unwrap()
                .len(),
            left.len(),
            "the trace summaries went with their spans"
        );
    }

    #[test]
    fn a_reader_meeting_a_store_being_made_waits_for_the_supervisor_to_make_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("telemetry.db");
        // As the supervisor leaves it between creating the file and setting it up.
        msctl_contract::fs::open_private(&path, true).unwrap();
        assert!(Store::open_read(&path).is_none(), "nothing stored yet");
        // The reader took no part in making it: the supervisor's own set-up still succeeds.
        let mut store = Store::open(&path).unwrap();
        store.insert_spans(&[]).unwrap();
        assert!(Store::open_read(&path).is_some());
    }
}
