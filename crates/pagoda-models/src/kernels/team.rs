//! A fixed team of worker threads for the forward pass's parallel loops,
//! which **spin** between jobs instead of sleeping: a decode step runs a
//! few hundred short parallel products back to back (tens of microseconds
//! each), and waking a sleeping thread for each one (what a general pool
//! does) costs as much as the product on a virtual machine. A worker that
//! sees no job for [`SPIN`] parks on a condition variable, so an idle
//! server burns no CPU. The calling thread always takes tasks itself.
//!
//! Tasks are claimed one index at a time from a counter tagged with the
//! job's number, so a late worker can never run a task of a finished job;
//! a job returns only when all its tasks have completed. Which thread runs
//! a task never changes what it computes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_millis(2);
/// Bits of the claim counter that hold the task index; the rest hold the
/// job's number (40 bits: a stale claim could only match again after 2^40
/// jobs, years of continuous decoding).
const INDEX_BITS: u32 = 24;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const EPOCH_MASK: u64 = (1 << (64 - INDEX_BITS)) - 1;

thread_local! {
    /// Whether this thread is running a task of a team (a nested
    /// [`Team::run`] then runs its tasks serially instead of deadlocking).
    static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A job's function with its lifetime erased; only called for a task
/// claimed under the job's number, while [`Team::run`] waits for it.
#[derive(Clone, Copy)]
struct ErasedJob(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the pointee is `Sync` and outlives every call (see `Team::run`).
unsafe impl Send for ErasedJob {}

struct Slot {
    epoch: u64,
    job: Option<ErasedJob>,
    tasks: usize,
    sleepers: usize,
}

struct Shared {
    slot: Mutex<Slot>,
    wake: Condvar,
    /// `epoch << INDEX_BITS | next task index`.
    claim: AtomicU64,
    /// Tasks of the current job completed.
    done: AtomicUsize,
    /// A task of the current job panicked.
    panicked: AtomicBool,
}

impl Shared {
    /// Claims and runs tasks of job `epoch` until none are left.
    fn work(&self, epoch: u64, job: ErasedJob, tasks: usize) {
        loop {
            let cur = self.claim.load(Ordering::Acquire);
            let index = (cur & INDEX_MASK) as usize;
            if cur >> INDEX_BITS != epoch || index >= tasks {
                return;
            }
            if self
                .claim
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // SAFETY: task `index` of job `epoch` is claimed and not yet
            // counted done, so `Team::run` is still waiting and the
            // function is alive.
            let f = unsafe { &*job.0 };
            let outer = IN_TASK.with(|t| t.replace(true));
            if catch_unwind(AssertUnwindSafe(|| f(index))).is_err() {
                self.panicked.store(true, Ordering::Release);
            }
            IN_TASK.with(|t| t.set(outer));
            self.done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The worker threads and their shared job slot.
pub struct Team {
    shared: Arc<Shared>,
    workers: usize,
    /// Serializes jobs from different callers.
    running: Mutex<()>,
}

impl std::fmt::Debug for Team {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Team")
            .field("workers", &self.workers)
            .finish()
    }
}

impl Team {
    /// A team of `threads` in all: the caller and `threads - 1` workers.
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot {
                epoch: 0,
                job: None,
                tasks: 0,
                sleepers: 0,
            }),
            wake: Condvar::new(),
            claim: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        });
        let mut workers = 0;
        for i in 0..threads.max(1) - 1 {
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pagoda-team-{i}"))
                .spawn(move || worker(&shared));
            if spawned.is_err() {
                // Fewer workers only means less parallelism.
                break;
            }
            workers += 1;
        }
        Self {
            shared,
            workers,
            running: Mutex::new(()),
        }
    }

    /// The process-wide team, as many threads as rayon's pool
    /// (`RAYON_NUM_THREADS`, or one per core).
    pub fn global() -> &'static Team {
        static TEAM: OnceLock<Team> = OnceLock::new();
        TEAM.get_or_init(|| Team::new(rayon::current_num_threads()))
    }

    /// Threads that run tasks, the caller included.
    pub fn threads(&self) -> usize {
        self.workers + 1
    }

    /// Runs `f(0) .. f(tasks - 1)` across the team, the caller included,
    /// and returns when all have completed. A panicking task panics here.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let nested = IN_TASK.with(|t| t.get());
        if tasks <= 1 || self.workers == 0 || nested || tasks as u64 > INDEX_MASK {
            (0..tasks).for_each(f);
            return;
        }
        let _one_job_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: only the lifetime is erased. The function is called only
        // for tasks claimed under this job's number, and this call returns
        // only after every task has completed, so no call outlives it.
        let job = ErasedJob(unsafe {
            std::mem::transmute::<
                *const (dyn Fn(usize) + Sync + '_),
                *const (dyn Fn(usize) + Sync + 'static),
            >(f as *const _)
        });
        let epoch = {
            let mut slot = s.slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.epoch = (slot.epoch + 1) & EPOCH_MASK;
            slot.job = Some(job);
            slot.tasks = tasks;
            s.done.store(0, Ordering::Release);
            s.panicked.store(false, Ordering::Release);
            s.claim.store(slot.epoch << INDEX_BITS, Ordering::Release);
            if slot.sleepers > 0 {
                s.wake.notify_all();
            }
            slot.epoch
        };
        s.work(epoch, job, tasks);
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < tasks {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1 << 10) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        if s.panicked.load(Ordering::Acquire) {
            panic!("a parallel task panicked");
        }
    }
}

impl Team {
    /// Runs `f(i, &mut parts[i])` for every part across the team, the
    /// caller included, each part handed to exactly one task: how tasks fill
    /// disjoint pieces of one buffer in place.
    pub fn run_parts<T: Send>(&self, parts: &mut [T], f: &(dyn Fn(usize, &mut T) + Sync)) {
        /// The parts' base pointer, shared by the tasks.
        struct Parts<T>(*mut T);
        impl<T> Parts<T> {
            fn at(&self, i: usize) -> *mut T {
                self.0.wrapping_add(i)
            }
        }
        // SAFETY: each task dereferences a different element (below), and
        // `T: Send` lets that element be used from the task's thread.
        unsafe impl<T: Send> Sync for Parts<T> {}
        let (base, n) = (Parts(parts.as_mut_ptr()), parts.len());
        self.run(n, &|i| {
            assert!(i < n, "a task index inside the parts");
            // SAFETY: `i < n`, so the element is inside `parts`; `run` calls
            // every index below `n` exactly once, so no two tasks hold the
            // same element, and `parts` stays mutably borrowed until `run`
            // has returned after all of them.
            let part = unsafe { &mut *base.at(i) };
            f(i, part);
        });
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        // Spin until a new job is published, or park after `SPIN`.
        while s.claim.load(Ordering::Acquire) >> INDEX_BITS == seen {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && start.elapsed() > SPIN {
                break;
            }
            std::hint::spin_loop();
        }
        let (epoch, job, tasks) = {
            let mut slot = s.slot.lock().unwrap_or_else(|e| e.into_inner());
            while slot.epoch == seen {
                slot.sleepers += 1;
                slot = s.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
                slot.sleepers -= 1;
            }
            (slot.epoch, slot.job, slot.tasks)
        };
        seen = epoch;
        if let Some(job) = job {
            s.work(epoch, job, tasks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_exactly_once_across_many_jobs() {
        let team = Team::new(3);
        for tasks in [0usize, 1, 2, 7, 64, 1000] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..50 {
                team.run(tasks, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
            }
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 50));
        }
    }

    #[test]
    fn each_part_goes_to_one_task() {
        let team = Team::new(3);
        let mut data = vec![0usize; 1000];
        let mut parts: Vec<&mut [usize]> = data.chunks_mut(7).collect();
        for _ in 0..20 {
            team.run_parts(&mut parts, &|i, part| {
                part.iter_mut().for_each(|v| *v += i + 1);
            });
        }
        for (i, v) in data.iter().enumerate() {
            assert_eq!(*v, 20 * (i / 7 + 1));
        }
    }

    #[test]
    fn a_task_that_runs_a_job_itself_runs_it_serially() {
        let team = Team::new(2);
        let count = AtomicUsize::new(0);
        team.run(4, &|_| {
            team.run(3, &|_| {
                count.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(count.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn parked_workers_wake_for_the_next_job() {
        let team = Team::new(2);
        std::thread::sleep(SPIN * 5);
        let sum = AtomicUsize::new(0);
        team.run(100, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_team_goes_on() {
        let team = Team::new(2);
        let result = catch_unwind(AssertUnwindSafe(|| {
            team.run(10, &|i| assert_ne!(i, 3, "task 3 fails"));
        }));
        assert!(result.is_err());
        let count = AtomicUsize::new(0);
        team.run(10, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 10);
    }
}
