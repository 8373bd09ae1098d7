//! A few interchangeable connections shared by the request threads: a request takes whichever
//! is free, so that two requests never wait on one another for a database they could both read.
//!
//! One connection behind one mutex made the worker threads of a loaded service queue on it, and
//! each wait put a thread to sleep and woke it again; the profile showed those switches as a
//! large share of a request's cost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The connections. Queries are short and run on the request's own thread: handing them to a
/// blocking pool would cost two thread switches per query, more than the query itself.
#[derive(Debug)]
pub struct Pool<T> {
    items: Box<[Mutex<T>]>,
    next: AtomicUsize,
}

/// How many connections a service opens: one per core, so that every worker thread has its own.
pub fn default_size() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 16))
}

impl<T> Pool<T> {
    /// A pool of `size` items made by `open`; at least one.
    pub fn open<E>(size: usize, mut open: impl FnMut() -> Result<T, E>) -> Result<Self, E> {
        let items = (0..size.max(1))
            .map(|_| open().map(Mutex::new))
            .collect::<Result<Vec<_>, E>>()?;
        Ok(Self {
            items: items.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    /// A free item, or, when all are taken, the next one in turn once it is free.
    pub fn get(&self) -> MutexGuard<'_, T> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.items.len();
        for i in 0..n {
            if let Ok(item) = self.items[(start + i) % n].try_lock() {
                return item;
            }
        }
        // A panic while holding a connection leaves it as usable as before: SQLite rolls back
        // an unfinished statement itself.
        self.items[start % n]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_item_is_passed_over_for_a_free_one() {
        let mut made = 0;
        let pool = Pool::open(3, || {
            made += 1;
            Ok::<_, ()>(made)
        })
        .unwrap();
        assert_eq!(pool.len(), 3);
        let a = pool.get();
        let b = pool.get();
        let c = pool.get();
        let mut held = [*a, *b, *c];
        held.sort();
        assert_eq!(held, [1, 2, 3], "three gets while held take three items");
    }

    #[test]
    fn a_failure_to_open_is_returned() {
        let mut n = 0;
        let failed = Pool::open(4, || {
            n += 1;
            if n == 3 { Err("disk full") } else { Ok(n) }
        });
        assert_eq!(failed.err(), Some("disk full"));
    }

    #[test]
    fn all_taken_waits_for_one_to_be_free() {
        let pool = std::sync::Arc::new(Pool::open(1, || Ok::<_, ()>(0u32)).unwrap());
        let held = pool.get();
        let other = pool.clone();
        let waiter = std::thread::spawn(move || {
            *other.get() += 1;
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!waiter.is_finished(), "the only item is held");
        drop(held);
        waiter.join().unwrap();
        assert_eq!(*pool.get(), 1);
    }
}
