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

/// Up to `want` helper threads, as many as the allowance has spare.
fn spare(want: usize) -> Helpers {
    let limit = 2 * cores();
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
    let n = jobs.len();
    let helpers = spare(cores().min(MAX_THREADS).min(n).saturating_sub(1));
    let jobs: Vec<Mutex<Option<Job<'a, T>>>> =
        jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let next = AtomicUsize::new(0);
    // Each thread takes the next job not taken and keeps its result with
    // the job's place.
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return done;
            }
            if let Some(job) = jobs[i].locked().take() {
                done.push((i, job()));
            }
        }
    };
    let mut done = std::thread::scope(|s| {
        let others: Vec<_> = (0..helpers.0).map(|_| s.spawn(work)).collect();
        let mut done = work();
        for h in others {
            match h.join() {
                Ok(d) => done.extend(d),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        done
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, t)| t).collect()
}

/// `a` and `b`, on two threads when the box has two cores and a helper
/// is spare (the caller's thread among them), else one after the other. A panic in either panics the
/// caller.
pub fn join<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    let helper = spare(cores().min(2) - 1);
    if helper.0 == 0 {
        return (a(), b());
    }
    std::thread::scope(|s| {
        let other = s.spawn(b);
        let a = a();
        match other.join() {
            Ok(b) => (a, b),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
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

    /// With no helper spare, the jobs run on the calling thread, all of
    /// them, in their places.
    #[test]
    fn without_spare_helpers_the_caller_runs_every_job() {
        let held = spare(usize::MAX);
        let caller = std::thread::current().id();
        let jobs: Vec<Job<'_, _>> = (0..5)
            .map(|i| -> Job<'_, _> { Box::new(move || (i, std::thread::current().id())) })
            .collect();
        let out = run(jobs);
        assert_eq!(
            out.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert!(out.iter().all(|r| r.1 == caller));
        assert_eq!(
            join(
                || std::thread::current().id(),
                || std::thread::current().id()
            ),
            (caller, caller)
        );
        drop(held);
    }
}
