//! Answers read from a SQLite database in WAL mode, kept per thread and dropped whole as soon as
//! any connection, in this process or another (a replica, the `sqlite3` shell), commits.
//!
//! A read transaction is the largest part of a small read's own work: SQLite takes the
//! WAL-index's mutex and a file lock to begin it and again to end it, and the worker threads
//! queue on that mutex. A commit always rewrites the WAL-index header (its first 48 bytes, as SQLite's
//! "WAL-mode file format" documents), whose change counter it increments, before the commit is
//! visible to any reader. Comparing those bytes with what they were when an answer was read
//! tells exactly whether anything may have changed since, without a system call.
//!
//! The header is read where SQLite itself maps it, through a connection the cache keeps open for
//! as long as it lives (the VFS's `xShmMap`). The cache opens no file of its own: closing any
//! descriptor of the WAL-index would drop every POSIX lock this process holds on it, SQLite's
//! included, and another process would then take itself for the first to open the WAL-index and
//! truncate it under the mapping. While a connection has a database open in WAL mode, SQLite
//! lets no one turn WAL off, so the mapped header stays the one every commit writes. When the
//! database is not in WAL mode the cache is off and every read goes to the database.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// The first copy of the WAL-index header, as 32-bit words.
const WORDS: usize = 12;
type Version = [u32; WORDS];

/// The size of SQLite's WAL-index regions, which `xShmMap` must be asked for.
const REGION: i32 = 32 * 1024;

#[derive(Debug)]
pub struct ReadCache<K: Send, V: Send> {
    /// `None` when the database is not in WAL mode.
    index: Option<Index>,
    /// Per thread, so that request threads never wait on one another as they do on SQLite's
    /// WAL-index mutex.
    threads: thread_local::ThreadLocal<RefCell<Entries<K, V>>>,
    /// Bytes each thread may hold, by `Weigh`.
    budget: usize,
}

/// What an answer costs to keep: its bytes, and a little for the entry around it.
pub trait Weigh {
    fn weight(&self) -> usize;
}

/// What an entry costs beside its value: key, hash slot, and the value's own header.
const ENTRY: usize = 64;

impl Weigh for axum::body::Bytes {
    fn weight(&self) -> usize {
        ENTRY + self.len()
    }
}

impl<T: Weigh> Weigh for Option<T> {
    fn weight(&self) -> usize {
        self.as_ref().map_or(ENTRY, Weigh::weight)
    }
}

#[derive(Debug)]
struct Entries<K, V> {
    /// The WAL-index header these entries were read under.
    version: Version,
    map: HashMap<K, V>,
    /// The entries' weight together.
    held: usize,
}

/// The WAL-index header as SQLite maps it, and the connection whose mapping it is.
#[derive(Debug)]
struct Index {
    header: NonNull<AtomicU32>,
    _pin: rusqlite::Connection,
}

// SAFETY: the header is only read, through atomic loads; the connection is never used after
// `open`, only held so that the mapping lives.
unsafe impl Send for Index {}
// SAFETY: as above: concurrent atomic loads of shared memory.
unsafe impl Sync for Index {}

impl Index {
    fn open(database: &Path) -> Option<Self> {
        let pin = rusqlite::Connection::open(database).ok()?;
        // Replicas open the file at the same moment; a lock held for a moment must not leave
        // this one without its cache for good.
        pin.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
        let mode: String = pin
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .ok()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return None;
        }
        // A read makes the connection map the WAL-index; it stays mapped until it closes.
        pin.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .ok()?;
        let header = mapped_header(&pin)?;
        Some(Self { header, _pin: pin })
    }

    fn version(&self) -> Version {
        // SAFETY: the first region of the WAL-index, 32 KiB, mapped by `_pin` for as long as
        // `self` lives; SQLite writes these words from other threads and processes, hence
        // atomic loads.
        let words = unsafe { std::slice::from_raw_parts(self.header.as_ptr(), WORDS) };
        std::array::from_fn(|i| words[i].load(Ordering::Acquire))
    }
}

/// The first region of the WAL-index of `conn`'s main database, where SQLite maps it.
fn mapped_header(conn: &rusqlite::Connection) -> Option<NonNull<AtomicU32>> {
    use rusqlite::ffi;
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: the handle is `conn`'s, open; SQLITE_FCNTL_FILE_POINTER writes one pointer to the
    // database's file object, which lives as long as the connection.
    let found = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        )
    };
    if found != ffi::SQLITE_OK || file.is_null() {
        return None;
    }
    // SAFETY: a file object SQLite gave; its methods are its VFS's, version 2 or later having
    // the shared-memory ones.
    let map = unsafe {
        let methods = (*file).pMethods;
        if methods.is_null() || (*methods).iVersion < 2 {
            return None;
        }
        (*methods).xShmMap?
    };
    let mut region: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: asks for region 0, which the connection's read has mapped already (`bExtend` 0:
    // nothing is created); SQLite hands back its own pointer, valid until the connection closes.
    let mapped = unsafe { map(file, 0, REGION, 0, &raw mut region) };
    if mapped != ffi::SQLITE_OK {
        return None;
    }
    NonNull::new(region.cast())
}

impl<K: Eq + Hash + Send, V: Clone + Send + Weigh> ReadCache<K, V> {
    /// A cache for reads from the database at `database`, holding answers of at most `budget`
    /// bytes together per thread. Off (every read goes to the database) unless the database is
    /// in WAL mode.
    pub fn open(database: &Path, budget: usize) -> Self {
        Self {
            index: Index::open(database),
            threads: thread_local::ThreadLocal::new(),
            budget,
        }
    }

    /// Whether answers are kept at all.
    pub fn is_on(&self) -> bool {
        self.index.is_some()
    }

    /// The answer for `key`: kept from an earlier `load` if nothing was committed since, or
    /// `load`ed now and kept. An answer read while a commit was under way is not kept, since
    /// it may be from either side of it.
    pub fn get_or_load<E>(&self, key: K, load: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        let Some(index) = &self.index else {
            return load();
        };
        let before = index.version();
        let entries = self.threads.get_or(|| {
            RefCell::new(Entries {
                version: before,
                map: HashMap::new(),
                held: 0,
            })
        });
        {
            let mut entries = entries.borrow_mut();
            if entries.version != before {
                entries.map.clear();
                entries.held = 0;
                entries.version = before;
            }
            if let Some(kept) = entries.map.get(&key) {
                return Ok(kept.clone());
            }
        }
        // Not borrowed across `load`, which may itself read through this cache.
        let value = load()?;
        if index.version() == before {
            let mut entries = entries.borrow_mut();
            let weight = value.weight();
            // An answer larger than the whole budget is never kept; past the budget the cache
            // starts again empty, which under a steady load of few keys is rare.
            if entries.version == before && weight <= self.budget {
                if entries.held + weight > self.budget {
                    entries.map.clear();
                    entries.held = 0;
                }
                if let Some(old) = entries.map.insert(key, value.clone()) {
                    entries.held -= old.weight();
                }
                entries.held += weight;
            }
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;
    use std::cell::Cell;

    impl Weigh for String {
        fn weight(&self) -> usize {
            ENTRY + self.len()
        }
    }

    fn database(dir: &Path, wal: bool) -> Connection {
        let conn = Connection::open(dir.join("t.db")).unwrap();
        if wal {
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT);
             INSERT OR REPLACE INTO t VALUES (1, 'one');",
        )
        .unwrap();
        conn
    }

    fn read(conn: &Connection, loads: &Cell<u32>) -> rusqlite::Result<String> {
        loads.set(loads.get() + 1);
        conn.query_row("SELECT v FROM t WHERE id = 1", [], |r| r.get(0))
    }

    #[test]
    fn an_answer_is_kept_until_another_connection_commits() {
        let dir = tempfile::tempdir().unwrap();
        let conn = database(dir.path(), true);
        // Another connection is as another process: it shares only the files.
        let other = Connection::open(dir.path().join("t.db")).unwrap();
        let cache = ReadCache::open(&dir.path().join("t.db"), 1 << 20);
        assert!(cache.is_on());
        let loads = Cell::new(0);
        let get = || cache.get_or_load(1, || read(&conn, &loads)).unwrap();
        assert_eq!(get(), "one");
        assert_eq!(get(), "one");
        assert_eq!(loads.get(), 1, "the second read is the kept answer");
        other
            .execute("UPDATE t SET v = 'uno' WHERE id = 1", [])
            .unwrap();
        assert_eq!(get(), "uno", "a commit elsewhere drops what was kept");
        assert_eq!(loads.get(), 2);
        // A commit that changes nothing this cache holds still drops it: it cannot tell.
        other
            .execute("INSERT INTO t VALUES (2, 'two')", [])
            .unwrap();
        assert_eq!(get(), "uno");
        assert_eq!(loads.get(), 3);
    }

    #[test]
    fn an_answer_read_while_a_commit_lands_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let conn = database(dir.path(), true);
        let other = Connection::open(dir.path().join("t.db")).unwrap();
        let cache = ReadCache::open(&dir.path().join("t.db"), 1 << 20);
        let loads = Cell::new(0);
        // The answer is read, then a commit lands before it is kept: it may be stale.
        let stale = cache
            .get_or_load(1, || {
                let v = read(&conn, &loads);
                other
                    .execute("UPDATE t SET v = 'eins' WHERE id = 1", [])
                    .unwrap();
                v
            })
            .unwrap();
        assert_eq!(stale, "one");
        let now = cache.get_or_load(1, || read(&conn, &loads)).unwrap();
        assert_eq!(
            now, "eins",
            "the answer read under the old version was not kept"
        );
        assert_eq!(loads.get(), 2);
    }

    #[test]
    fn without_wal_every_read_goes_to_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let conn = database(dir.path(), false);
        let cache = ReadCache::open(&dir.path().join("t.db"), 1 << 20);
        assert!(!cache.is_on());
        let loads = Cell::new(0);
        for _ in 0..3 {
            cache.get_or_load(1, || read(&conn, &loads)).unwrap();
        }
        assert_eq!(loads.get(), 3);
    }

    #[test]
    fn while_the_cache_lives_no_one_can_turn_wal_off() {
        let dir = tempfile::tempdir().unwrap();
        let conn = database(dir.path(), true);
        let cache = ReadCache::open(&dir.path().join("t.db"), 1 << 20);
        let loads = Cell::new(0);
        cache.get_or_load(1, || read(&conn, &loads)).unwrap();
        drop(conn);
        // Were WAL off, commits would no longer touch the header the cache watches.
        let other = Connection::open(dir.path().join("t.db")).unwrap();
        let refused = other
            .pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get::<_, String>(0));
        assert!(
            matches!(&refused, Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)),
            "{refused:?}"
        );
        other
            .execute("UPDATE t SET v = 'un' WHERE id = 1", [])
            .unwrap();
        let v = cache.get_or_load(1, || read(&other, &loads)).unwrap();
        assert_eq!(v, "un");
        assert_eq!(loads.get(), 2);
    }

    #[test]
    fn a_cache_at_its_budget_starts_again_rather_than_grow() {
        let dir = tempfile::tempdir().unwrap();
        let _db = database(dir.path(), true);
        let answer = axum::body::Bytes::from(vec![b'x'; 100]);
        // Room for two answers of 100 bytes, not three.
        let cache = ReadCache::open(&dir.path().join("t.db"), 2 * answer.weight());
        let loads = Cell::new(0);
        for key in [1, 2, 3, 1] {
            cache
                .get_or_load(key, || {
                    loads.set(loads.get() + 1);
                    Ok::<_, ()>(answer.clone())
                })
                .unwrap();
        }
        assert_eq!(
            loads.get(),
            4,
            "the third key emptied the cache, the first was read again"
        );
        {
            let entries = cache.threads.get().unwrap().borrow();
            assert!(
                entries.held <= 2 * answer.weight(),
                "{} bytes held",
                entries.held
            );
            assert_eq!(
                entries.held,
                entries.map.values().map(Weigh::weight).sum::<usize>()
            );
        }
        // An answer larger than the whole budget is never kept.
        let big = axum::body::Bytes::from(vec![b'x'; 1000]);
        for _ in 0..2 {
            cache
                .get_or_load(9, || {
                    loads.set(loads.get() + 1);
                    Ok::<_, ()>(big.clone())
                })
                .unwrap();
        }
        assert_eq!(loads.get(), 6);
    }
}
