//! Keeping background work alive through a bug: a panic in one pass of a
//! periodic task, or in one writer job, is logged, counted and contained, so
//! the next pass runs as scheduled instead of the task ending silently while
//! the server still looks healthy.
//!
//! A leaf module, like [`crate::metrics`]: every layer may use it.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use crate::metrics::CounterSet;

/// The server's periodic tasks, as labels of `tally_task_panics_total`.
pub const TASKS: &[&str] = &[
    "visit_flush",
    "maintenance",
    "retention",
    "backups",
    "summaries",
];

/// What a panic said, when it said it with a string (as `panic!` and
/// `expect` do).
pub fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs `pass` now and then every `every`, on the current tokio runtime,
/// until the returned task is aborted. A pass that panics is logged and
/// counted under `task` in `panics`; the next one runs as scheduled.
pub fn spawn_every<F, Fut>(
    task: &'static str,
    every: Duration,
    panics: Arc<CounterSet>,
    mut pass: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        // A pass that overran (or panicked late) does not set off a burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // A pass keeps nothing of its own between runs; the next one
            // starts from the shared state (the ingestor, the store).
            if let Err(panic) = AssertUnwindSafe(pass()).catch_unwind().await {
                panics.inc(task);
                tracing::error!(
                    task,
                    panic = panic_message(&*panic),
                    "a background pass panicked; the next one runs as scheduled"
                );
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_pass_that_panics_does_not_stop_the_next() {
        let panics = Arc::new(CounterSet::new(TASKS));
        let passes = Arc::new(AtomicUsize::new(0));
        let counted = passes.clone();
        let task = spawn_every(
            "visit_flush",
            Duration::from_millis(10),
            panics.clone(),
            move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        panic!("a bug in the first pass");
                    }
                }
            },
        );
        // Generous: the passes are 10 ms apart.
        for _ in 0..500 {
            if passes.load(Ordering::SeqCst) >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(passes.load(Ordering::SeqCst) >= 3, "passes after the panic");
        assert_eq!(panics.get("visit_flush"), 1);
        assert!(!task.is_finished());
        task.abort();
    }
}
