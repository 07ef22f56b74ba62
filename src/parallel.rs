//! Independent parts of one answer run side by side: a dashboard's
//! queries, each over its own report, and the halves of one query over the
//! column store, so a report uses every core of a small box rather than one
//! (as an analytics engine does with a query, or a browser with separate
//! requests for each panel). A leaf: it imports nothing of Tally but
//! [`crate::sync`].
//!
//! Bounded: at most [`MAX_THREADS`] threads per call (the calling one
//! included), fewer on a box with fewer cores, and at most twice the cores
//! ([`spare`]) helper threads in the whole process at once. A call that
//! finds none spare runs its jobs on the calling thread, one after the
//! other, as it would on one core: many pages at once share the cores
//! rather than start threads without end.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::sync::Lock;

/// The most threads one call uses, its own included.
const MAX_THREADS: usize = 4;

/// Helper threads running now, every call together.
static HELPERS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set while a thread runs jobs of [`run`]: their siblings already
    /// share the cores, so a `join` inside one runs its halves in turn
    /// rather than add threads the cores cannot run.
    static IN_JOBS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with [`IN_JOBS`] set, restoring it after (also on a panic).
fn as_jobs<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_JOBS.with(|j| j.set(self.0));
        }
    }
    let _reset = Reset(IN_JOBS.with(|j| j.replace(true)));
    f()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Helper threads taken from the process's allowance (twice the cores),
/// handed back when dropped.
struct Helpers(usize);

impl Drop for Helpers {
    fn drop(&mut self) {
        HELPERS.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// The most helper threads running at once, every call together: twice
/// the cores. Each may hold a report, so the database's pool of readers
/// has this many beyond the callers' own.
pub fn max_helpers() -> usize {
    2 * cores()
}

/// Up to `want` helper threads, as many as the allowance has spare.
fn spare(want: usize) -> Helpers {
    let limit = max_helpers();
    let mut taken = 0;
    let _ = HELPERS.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
        taken = want.min(limit.saturating_sub(now));
        Some(now + taken)
    });
    Helpers(taken)
}

/// A job of [`run`].
pub type Job<'a, T> = Box<dyn FnOnce() -> T + Send + 'a>;

/// Runs `jobs` on up to [`MAX_THREADS`] threads (the caller's among them,
/// helpers as [`spare`] allows),
/// each job once, the longest first as given; returns their results in
/// the order of `jobs`. A panicking job panics the caller, as it would
/// have there.
pub fn run<'a, T: Send>(jobs: Vec<Job<'a, T>>) -> Vec<T> {
    let want = cores().min(MAX_THREADS).min(jobs.len()).saturating_sub(1);
    run_with(spare(want), jobs)
}

fn run_with<'a, T: Send>(helpers: Helpers, jobs: Vec<Job<'a, T>>) -> Vec<T> {
    let n = jobs.len();
    let jobs: Vec<Mutex<Option<Job<'a, T>>>> =
        jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let next = AtomicUsize::new(0);
    // Each thread takes the next job not taken and keeps its result with
    // the job's place.
    let work = || {
        as_jobs(|| {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return done;
                }
                let job = jobs[i].locked().take();
                if let Some(job) = job {
                    done.push((i, job()));
                }
            }
        })
    };
    let mut done = std::thread::scope(|s| {
        // A thread the system refuses leaves its jobs to the others.
        let others: Vec<_> = (0..helpers.0)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(s, work).ok())
            .collect();
        let mut done = work();
        for h in others {
            match h.join() {
                Ok(d) => done.extend(d),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        done
    });
    drop(helpers);
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, t)| t).collect()
}

/// `a` on the calling thread and `b` on a helper when the box has two
/// cores and a helper is spare, else `b` after `a` (also inside a job of
/// [`run`], whose siblings already share the cores). A panic in either
/// panics the caller.
pub fn join<A, B: Send>(a: impl FnOnce() -> A, b: impl FnOnce() -> B + Send) -> (A, B) {
    if IN_JOBS.with(std::cell::Cell::get) {
        return (a(), b());
    }
    join_with(spare(cores().min(2) - 1), a, b)
}

fn join_with<A, B: Send>(
    helper: Helpers,
    a: impl FnOnce() -> A,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if helper.0 == 0 {
        return (a(), b());
    }
    // `b` waits in a slot: a thread the system refuses leaves it here.
    let slot = Mutex::new(Some(b));
    let run_b = || slot.locked().take().map(|b| b());
    let (a, from_thread) = std::thread::scope(|s| {
        let other = std::thread::Builder::new().spawn_scoped(s, run_b).ok();
        let a = a();
        let from_thread = other.and_then(|h| match h.join() {
            Ok(b) => b,
            Err(panic) => std::panic::resume_unwind(panic),
        });
        (a, from_thread)
    });
    drop(helper);
    let b = match from_thread {
        Some(b) => b,
        None => match run_b() {
            Some(b) => b,
            None => unreachable!("`b` ran on no thread and is not in its slot"),
        },
    };
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every job runs once and its result lands in its place, whatever the
    /// number of jobs and threads.
    #[test]
    fn every_job_runs_once_and_keeps_its_place() {
        for n in [0usize, 1, 2, 3, 17] {
            let ran = AtomicUsize::new(0);
            let jobs: Vec<Job<'_, usize>> = (0..n)
                .map(|i| -> Job<'_, usize> {
                    let ran = &ran;
                    Box::new(move || {
                        ran.fetch_add(1, Ordering::Relaxed);
                        i * 10
                    })
                })
                .collect();
            let out = run(jobs);
            assert_eq!(out, (0..n).map(|i| i * 10).collect::<Vec<_>>());
            assert_eq!(ran.load(Ordering::Relaxed), n);
        }
        assert_eq!(join(|| 1, || "two"), (1, "two"));
    }

    /// Inside a job of `run`, a `join` runs both halves on the job's
    /// thread; after `run`, the thread is itself again.
    #[test]
    fn a_join_inside_a_job_stays_on_its_thread() {
        let here = || std::thread::current().id();
        let jobs: Vec<Job<'_, _>> = (0..3)
            .map(|_| -> Job<'_, _> {
                Box::new(move || {
                    let (a, b) = join(here, here);
                    a == b
                })
            })
            .collect();
        assert!(run(jobs).into_iter().all(|same| same));
        assert!(!IN_JOBS.with(std::cell::Cell::get));
    }

    /// With no helper spare, the jobs run on the calling thread, all of
    /// them, in their places.
    #[test]
    fn without_spare_helpers_the_caller_runs_every_job() {
        let caller = std::thread::current().id();
        let jobs: Vec<Job<'_, _>> = (0..5)
            .map(|i| -> Job<'_, _> { Box::new(move || (i, std::thread::current().id())) })
            .collect();
        let out = run_with(Helpers(0), jobs);
        assert_eq!(
            out.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert!(out.iter().all(|r| r.1 == caller));
        let here = || std::thread::current().id();
        assert_eq!(join_with(Helpers(0), here, here), (caller, caller));
        // With a helper (when one is spare now), `b` runs on another thread.
        let helper = spare(1);
        let granted = helper.0 == 1;
        let (a, b) = join_with(helper, here, here);
        assert_eq!(a, caller);
        assert_eq!(b != caller, granted);
    }
}
