//! A small spinning thread pool for the forward pass. A decode step runs a few hundred
//! short parallel sections (one per matrix); waking sleeping threads for each (as rayon
//! does) costs tens of microseconds per section, which for small models is a large share
//! of the token. Here idle workers spin for a while, then park.
//!
//! One job at a time: `run(n, f)` calls `f(i)` for every i < n across the pool (the caller
//! takes tasks too) and returns when all are done. Tasks are claimed from one atomic word
//! holding (epoch, n, next): a claim is a compare-and-swap on the whole word, so a worker
//! that lags behind can never take a task of a later job.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};

const IDX_BITS: u64 = 24;
const IDX_MASK: u64 = (1 << IDX_BITS) - 1;
/// Most tasks per job (2^24).
pub const MAX_TASKS: usize = IDX_MASK as usize;
/// Spins before a worker parks (about a millisecond).
const SPINS: u32 = 1 << 16;

type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// epoch (16 bits) | n (24 bits) | next (24 bits).
    word: AtomicU64,
    /// The job of epoch e sits in slot e % 2 (a pointer to a `Job` on the caller's stack).
    slots: [AtomicPtr<()>; 2],
    done: AtomicUsize,
    stop: AtomicBool,
    parked: Vec<AtomicBool>,
    threads: Mutex<Vec<Thread>>,
}

fn pack(epoch: u64, n: u64, next: u64) -> u64 {
    (epoch << (2 * IDX_BITS)) | (n << IDX_BITS) | next
}

fn unpack(w: u64) -> (u64, u64, u64) {
    (w >> (2 * IDX_BITS), (w >> IDX_BITS) & IDX_MASK, w & IDX_MASK)
}

impl Shared {
    /// Claim and run tasks of the job published in `w`'s epoch until none are left.
    fn work(&self, mut w: u64) {
        // Tasks finished here, added to `done` once on leaving: one contended atomic add per
        // thread and job instead of one per task.
        let mut finished = 0;
        let leave = |finished: usize| {
            if finished > 0 {
                self.done.fetch_add(finished, Release);
            }
        };
        loop {
            let (e, n, i) = unpack(w);
            if i >= n {
                return leave(finished);
            }
            match self.word.compare_exchange_weak(w, w + 1, AcqRel, Acquire) {
                Ok(_) => {
                    let p = self.slots[(e & 1) as usize].load(Acquire) as *const Job;
                    // SAFETY: a task of epoch e was claimed, so the job of epoch e is not
                    // finished: its caller is still inside `run`, where the closure and the
                    // `Job` reference this points to live. Slot e % 2 is rewritten only for
                    // epoch e + 2, which cannot start before e finishes.
                    let f = unsafe { *p };
                    f(i as usize);
                    finished += 1;
                    w = self.word.load(Acquire);
                }
                Err(now) => {
                    if unpack(now).0 != e {
                        return leave(finished);
                    }
                    w = now;
                }
            }
        }
    }
}

pub struct Pool {
    shared: Arc<Shared>,
    n_threads: usize,
    /// Serialises callers: one job at a time.
    lock: Mutex<()>,
}

impl Pool {
    /// A pool of `n_threads` threads in all (the caller counts as one).
    pub fn new(n_threads: usize) -> Pool {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            word: AtomicU64::new(0),
            slots: [AtomicPtr::new(std::ptr::null_mut()), AtomicPtr::new(std::ptr::null_mut())],
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            parked: (0..n_threads).map(|_| AtomicBool::new(false)).collect(),
            threads: Mutex::new(Vec::new()),
        });
        for k in 1..n_threads {
            let s = Arc::clone(&shared);
            let h = thread::Builder::new()
                .name(format!("ferrite-{k}"))
                .spawn(move || worker(&s, k))
                .expect("spawning a pool thread");
            shared.threads.lock().expect("pool lock").push(h.thread().clone());
        }
        Pool { shared, n_threads, lock: Mutex::new(()) }
    }

    pub fn threads(&self) -> usize {
        self.n_threads
    }

    /// Call `f(i)` for every i in 0..n on the pool's threads; returns when all are done.
    pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if n == 0 {
            return;
        }
        if self.n_threads == 1 || n == 1 {
            (0..n).for_each(f);
            return;
        }

        assert!(n <= MAX_TASKS, "at most {MAX_TASKS} tasks per job");
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        let (e, _, _) = unpack(s.word.load(Acquire));
        let e = (e + 1) & 0xffff;
        let job: Job = f;
        s.slots[(e & 1) as usize].store(&job as *const Job as *mut (), Release);
        s.done.store(0, Relaxed);
        s.word.store(pack(e, n as u64, 0), Release);
        for (k, p) in s.parked.iter().enumerate().skip(1) {
            if p.load(Acquire) {
                if let Some(t) = s.threads.lock().expect("pool lock").get(k - 1) {
                    t.unpark();
                }
            }
        }
        s.work(s.word.load(Acquire));
        while s.done.load(Acquire) < n {
            std::hint::spin_loop();
        }
    }
}

fn worker(s: &Shared, k: usize) {
    let mut seen = unpack(s.word.load(Acquire)).0;
    loop {
        let mut spins = 0u32;
        let w = loop {
            let w = s.word.load(Acquire);
            if unpack(w).0 != seen || s.stop.load(Relaxed) {
                break w;
            }
            spins += 1;
            if spins < SPINS {
                std::hint::spin_loop();
            } else {
                // Park; `run` unparks parked workers after publishing. Re-check after
                // raising the flag so a job published in between is not missed. (The
                // AMX tiles released first: a parked thread's switches then need not
                // save them.)
                #[cfg(target_arch = "x86_64")]
                crate::x86_64::amx::release_tiles();
                s.parked[k].store(true, SeqCst);
                if unpack(s.word.load(SeqCst)).0 == seen && !s.stop.load(Relaxed) {
                    thread::park_timeout(std::time::Duration::from_millis(50));
                }
                s.parked[k].store(false, SeqCst);
                spins = 0;
            }
        };
        if s.stop.load(Relaxed) {
            return;
        }
        seen = unpack(w).0;
        s.work(w);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        for t in self.shared.threads.lock().expect("pool lock").iter() {
            t.unpark();
        }
    }
}

static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Set the global pool's size; must be called before its first use to take effect.
pub fn set_threads(n: usize) {
    THREADS.store(n, SeqCst);
}

/// The process-wide pool (default: one thread per available core).
pub fn global() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = match THREADS.load(SeqCst) {
            0 => thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        Pool::new(n)
    })
}

/// A raw pointer into a buffer that the tasks of one parallel section share, each writing
/// its own disjoint part (every user says which at its `unsafe` block), while the buffer
/// outlives the section. Read through `ptr()`, so closures capture the wrapper, which is
/// `Sync`, not the raw pointer field, which is not.
pub struct SharedMut<T>(pub *mut T);

// Not derived: a derive would ask T: Copy, and the pointer is copied whatever T is.
impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}

// SAFETY: the wrapper only carries the pointer across threads; every dereference is an
// `unsafe` block of its user, which writes a part no other task touches (see above).
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    pub fn ptr(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_across_many_jobs() {
        let pool = Pool::new(3);
        for n in [1usize, 2, 3, 7, 100, 1000] {
            for _ in 0..200 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "n = {n}");
            }
        }
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = Pool::new(2);
        std::thread::sleep(std::time::Duration::from_millis(120));
        let sum = AtomicUsize::new(0);
        pool.run(64, &|i| {
            sum.fetch_add(i, Relaxed);
        });
        assert_eq!(sum.load(Relaxed), 64 * 63 / 2);
    }
}
