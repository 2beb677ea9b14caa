//! A fixed pool of worker threads, created once and reused for every kernel call.
//!
//! `CpuPool::run(n, f)` calls `f(0)`, …, `f(n-1)` exactly once each, spread over the workers and
//! the calling thread, and returns when all calls have finished. Tasks are claimed dynamically
//! from a shared counter, so a slow (preempted) thread does not hold the others back.
//!
//! A `run` issued while the pool is already running a job (a nested call from inside a task, or a
//! concurrent call from another thread) executes its tasks serially on the calling thread instead
//! of waiting, so nesting can never deadlock.
//!
//! A panic inside a task is caught on the worker, the remaining tasks still run, and `run`
//! re-raises a panic on the caller once every thread has let go of `f`.

use std::marker::PhantomData;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A pool of `threads - 1` persistent worker threads plus the calling thread.
pub struct CpuPool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held for the duration of a parallel `run`; a `run` that cannot take it runs inline.
    running: Mutex<()>,
}

/// The task function of the current job with its lifetime erased.
///
/// Only dereferenced between the job's publication and the moment the worker reports the job
/// finished; `run` does not return (or unwind) before every worker has reported.
#[derive(Clone, Copy)]
struct JobFn(*const (dyn Fn(usize, usize) + Sync + 'static));

// SAFETY: the pointee is `Sync`, so sharing the pointer between threads is sound; its lifetime
// is guaranteed by `run` waiting for all workers (see `JobFn`).
unsafe impl Send for JobFn {}

struct Job {
    f: JobFn,
    n_tasks: usize,
}

struct State {
    generation: u64,
    job: Option<Job>,
    /// Workers that have not yet finished the current generation.
    busy_workers: usize,
    panicked: bool,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Mirror of `State::generation`, for workers spinning briefly before they sleep.
    published: AtomicU64,
    work_ready: Condvar,
    work_done: Condvar,
    next_task: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Tasks never run while the state lock is held, so it cannot be poisoned by a task panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims and runs tasks until none are left; returns whether any of them panicked.
    fn drain(&self, f: &(dyn Fn(usize, usize) + Sync), thread: usize, n_tasks: usize) -> bool {
        let mut panicked = false;
        loop {
            let task = self.next_task.fetch_add(1, Ordering::Relaxed);
            if task >= n_tasks {
                return panicked;
            }
            if panic::catch_unwind(AssertUnwindSafe(|| f(thread, task))).is_err() {
                panicked = true;
            }
        }
    }
}

impl CpuPool {
    /// Creates a pool that runs jobs on `threads` threads: `threads - 1` workers plus the caller.
    ///
    /// # Panics
    /// If `threads == 0` or a worker thread cannot be spawned.
    pub fn new(threads: usize) -> CpuPool {
        assert!(threads >= 1, "CpuPool needs at least one thread");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                generation: 0,
                job: None,
                busy_workers: 0,
                panicked: false,
                shutdown: false,
            }),
            work_ready: Condvar::new(),
            work_done: Condvar::new(),
            next_task: AtomicUsize::new(0),
            published: AtomicU64::new(0),
        });
        let workers = (1..threads)
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("amanuensis-cpu-{index}"))
                    .spawn(move || worker_loop(&shared, index))
                    .expect("spawning a CpuPool worker thread")
            })
            .collect();
        CpuPool {
            threads,
            shared,
            workers,
            running: Mutex::new(()),
        }
    }

    /// Number of threads a job is spread over (workers + caller).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(0..n_tasks)`, each index exactly once, spread over the threads; returns when all
    /// are done.
    pub fn run<F: Fn(usize) + Sync>(&self, n_tasks: usize, f: F) {
        self.run_on_threads(n_tasks, |_thread, task| f(task));
    }

    /// Like [`CpuPool::run`], but `f(thread, task)` also receives the index (`< self.threads()`)
    /// of the thread running it, for per-thread scratch. Within one call, no two tasks run at
    /// the same time with the same `thread`.
    pub fn run_on_threads<F: Fn(usize, usize) + Sync>(&self, n_tasks: usize, f: F) {
        if self.workers.is_empty() || n_tasks <= 1 {
            (0..n_tasks).for_each(|task| f(0, task));
            return;
        }
        let _running = match self.running.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            // Nested or concurrent use: run serially here rather than wait.
            Err(TryLockError::WouldBlock) => {
                (0..n_tasks).for_each(|task| f(0, task));
                return;
            }
        };
        let f: &(dyn Fn(usize, usize) + Sync) = &f;
        // SAFETY: only the lifetime is erased. `JobWait` below waits (also when `f` panics on
        // this thread) until every worker has finished with the job, so the pointer is never
        // dereferenced after `f` goes out of scope.
        let erased: *const (dyn Fn(usize, usize) + Sync + 'static) =
            unsafe { std::mem::transmute(f as *const (dyn Fn(usize, usize) + Sync)) };
        {
            let mut state = self.shared.lock();
            self.shared.next_task.store(0, Ordering::Relaxed);
            state.job = Some(Job {
                f: JobFn(erased),
                n_tasks,
            });
            state.generation = state.generation.wrapping_add(1);
            self.shared
                .published
                .store(state.generation, Ordering::Release);
            state.busy_workers = self.workers.len();
            state.panicked = false;
        }
        self.shared.work_ready.notify_all();
        let wait = JobWait {
            shared: &self.shared,
        };
        let caller_panicked = self.shared.drain(f, 0, n_tasks);
        let worker_panicked = wait.finish();
        if caller_panicked || worker_panicked {
            panic!("a CpuPool task panicked");
        }
    }
}

/// Waits for all workers to finish the current job, on drop as well (when the caller unwinds).
struct JobWait<'a> {
    shared: &'a Shared,
}

impl JobWait<'_> {
    /// Waits, clears the job and returns whether a worker's task panicked.
    fn finish(self) -> bool {
        let panicked = self.wait();
        std::mem::forget(self);
        panicked
    }

    fn wait(&self) -> bool {
        let mut state = self.shared.lock();
        while state.busy_workers > 0 {
            state = self
                .shared
                .work_done
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        state.job = None;
        state.panicked
    }
}

impl Drop for JobWait<'_> {
    fn drop(&mut self) {
        self.wait();
    }
}

/// How long a worker keeps polling for the next job before it blocks on the condvar: kernels
/// come in quick succession (a decoder step is dozens of small calls), and a futex wake-up
/// costs tens of microseconds, more than many of those calls take.
const SPIN: Duration = Duration::from_micros(50);

fn worker_loop(shared: &Shared, thread: usize) {
    let mut seen_generation = 0u64;
    loop {
        let spin_start = Instant::now();
        'spin: while shared.published.load(Ordering::Acquire) == seen_generation {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            if spin_start.elapsed() > SPIN {
                break 'spin;
            }
        }
        let (f, n_tasks) = {
            let mut state = shared.lock();
            while state.generation == seen_generation && !state.shutdown {
                state = shared
                    .work_ready
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if state.shutdown {
                return;
            }
            seen_generation = state.generation;
            let job = state
                .job
                .as_ref()
                .expect("a new generation always carries a job");
            (job.f, job.n_tasks)
        };
        // SAFETY: the job is live until this worker decrements `busy_workers` below (see
        // `JobFn`), and the pointee is `Sync`.
        let f = unsafe { &*f.0 };
        let panicked = shared.drain(f, thread, n_tasks);
        let mut state = shared.lock();
        state.panicked |= panicked;
        state.busy_workers -= 1;
        if state.busy_workers == 0 {
            shared.work_done.notify_all();
        }
    }
}

impl Drop for CpuPool {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work_ready.notify_all();
        for worker in self.workers.drain(..) {
            // A worker never panics outside `catch_unwind`; nothing to report if it did.
            let _ = worker.join();
        }
    }
}

/// A mutable slice that concurrently running pool tasks write at disjoint ranges.
///
/// The caller of [`DisjointSlice::range`] promises that no two live borrows overlap.
pub(crate) struct DisjointSlice<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: it hands out `&mut [T]` to disjoint ranges on different threads, which is sound for
// `T: Send` exactly as `split_at_mut` + sending the halves would be.
unsafe impl<T: Send> Send for DisjointSlice<'_, T> {}
// SAFETY: see `Send`; shared access only produces disjoint mutable borrows (caller contract).
unsafe impl<T: Send> Sync for DisjointSlice<'_, T> {}

impl<'a, T> DisjointSlice<'a, T> {
    pub(crate) fn new(slice: &'a mut [T]) -> Self {
        DisjointSlice {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _borrow: PhantomData,
        }
    }

    /// Mutable access to `range`.
    ///
    /// # Safety
    /// No other borrow obtained from this `DisjointSlice` that overlaps `range` may be live.
    #[allow(clippy::mut_from_ref)] // the whole point: disjoint &mut from a shared handle
    pub(crate) unsafe fn range(&self, range: Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (asserted), the borrow `'a` of the original slice is alive, and the
        // caller guarantees no overlapping live borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn counts(n: usize) -> Vec<AtomicU32> {
        (0..n).map(|_| AtomicU32::new(0)).collect()
    }

    #[test]
    fn every_task_runs_exactly_once() {
        for threads in 1..=4 {
            let pool = CpuPool::new(threads);
            assert_eq!(pool.threads(), threads);
            for n in [0, 1, 2, 3, 7, 64, 1000] {
                // Reuse the same pool many times to catch generation / wake-up races.
                for _ in 0..20 {
                    let c = counts(n);
                    pool.run(n, |i| {
                        c[i].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(
                        c.iter().all(|x| x.load(Ordering::Relaxed) == 1),
                        "{threads} {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn thread_indices_are_in_range_and_exclusive() {
        let pool = CpuPool::new(3);
        let in_use = counts(3);
        let c = counts(500);
        pool.run_on_threads(500, |thread, task| {
            assert!(thread < 3);
            assert_eq!(in_use[thread].fetch_add(1, Ordering::SeqCst), 0);
            std::hint::black_box((0..100).sum::<u64>());
            in_use[thread].fetch_sub(1, Ordering::SeqCst);
            c[task].fetch_add(1, Ordering::Relaxed);
        });
        assert!(c.iter().all(|x| x.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn nested_runs_complete() {
        for threads in 1..=4 {
            let pool = CpuPool::new(threads);
            let c = counts(8 * 9);
            pool.run(8, |outer| {
                pool.run(9, |inner| {
                    c[outer * 9 + inner].fetch_add(1, Ordering::Relaxed);
                });
            });
            assert!(c.iter().all(|x| x.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn concurrent_callers_complete() {
        let pool = CpuPool::new(2);
        let c = counts(4 * 100);
        std::thread::scope(|s| {
            for caller in 0..4 {
                let (pool, c) = (&pool, &c);
                s.spawn(move || {
                    pool.run(100, |i| {
                        c[caller * 100 + i].fetch_add(1, Ordering::Relaxed);
                    })
                });
            }
        });
        assert!(c.iter().all(|x| x.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn task_panic_propagates_and_pool_stays_usable() {
        let pool = CpuPool::new(2);
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(10, |i| {
                if i == 5 {
                    panic!("task five fails");
                }
            })
        }));
        assert!(result.is_err());
        let c = counts(10);
        pool.run(10, |i| {
            c[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(c.iter().all(|x| x.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn disjoint_slice_writes_land() {
        let pool = CpuPool::new(2);
        let mut data = vec![0u32; 100];
        let view = DisjointSlice::new(&mut data);
        pool.run(10, |t| {
            // SAFETY: task t owns elements 10t..10t+10 only.
            let part = unsafe { view.range(t * 10..t * 10 + 10) };
            part.iter_mut().for_each(|x| *x = t as u32);
        });
        assert!(data.iter().enumerate().all(|(i, &x)| x == (i / 10) as u32));
    }
}
