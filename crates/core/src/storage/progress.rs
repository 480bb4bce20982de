//! The stall detector: an attempt that makes no progress for a while is cut, however large the
//! object, instead of every request getting one fixed deadline.
//!
//! A [`Progress`] records when an attempt last moved: bytes sent or received, an answer. The
//! attempt runs inside [`watch`], which makes that `Progress` the task's current one, so a
//! backend calls [`note`] (or keeps [`current`] for work done on other threads, such as the
//! hyper connection task sending an S3 request body or the blocking pool writing a file) as it
//! goes. [`watch`] cuts the attempt when nothing was noted for the stall limit, or when an
//! overall limit passes. A large upload on a slow link keeps noting progress and is never cut; a
//! lost answer, a hung connection or a hung filesystem call is cut after the stall limit.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When an attempt last made progress. Cloning gives another handle to the same record.
#[derive(Clone, Debug)]
pub struct Progress {
    started: Instant,
    /// Milliseconds from `started` to the last progress.
    last: Arc<AtomicU64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// A record whose last progress is now.
    pub fn new() -> Self {
        Self { started: Instant::now(), last: Arc::new(AtomicU64::new(0)) }
    }

    /// Records progress now.
    pub fn note(&self) {
        self.note_ahead(Duration::ZERO);
    }

    /// Records progress as if it happened `ahead` from now: for work known to go on unseen
    /// (bytes handed to the kernel's send buffer still leaving on a slow link).
    pub fn note_ahead(&self, ahead: Duration) {
        let at = self.started.elapsed() + ahead;
        self.last.fetch_max(u64::try_from(at.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When progress was last recorded.
    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

tokio::task_local! {
    static CURRENT: Progress;
}

/// The progress record of the attempt this task runs, if it runs under [`watch`].
pub fn current() -> Option<Progress> {
    CURRENT.try_with(Progress::clone).ok()
}

/// Records progress of the attempt this task runs (nothing outside [`watch`]).
pub fn note() {
    let _ = CURRENT.try_with(Progress::note);
}

/// Why [`watch`] cut an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Nothing moved for the stall limit.
    Stalled(Duration),
    /// The overall limit passed.
    Deadline(Duration),
}

/// Runs `attempt` with a fresh [`Progress`] as the task's current one; cuts it (dropping it) when
/// it makes no progress for `stall`, or when `limit` (if any) has passed since the start.
pub async fn watch<T>(stall: Duration, limit: Option<Duration>, attempt: impl Future<Output = T>) -> Result<T, Cut> {
    let progress = Progress::new();
    let started = Instant::now();
    let end = limit.map(|limit| started + limit);
    let work = CURRENT.scope(progress.clone(), attempt);
    tokio::pin!(work);
    loop {
        let stall_at = progress.last() + stall;
        let check_at = end.map_or(stall_at, |end| end.min(stall_at));
        tokio::select! {
            output = &mut work => return Ok(output),
            () = tokio::time::sleep_until(check_at) => {
                let now = Instant::now();
                if let (Some(end), Some(limit)) = (end, limit)
                    && now >= end
                {
                    return Err(Cut::Deadline(limit));
                }
                if now >= progress.last() + stall {
                    return Err(Cut::Stalled(stall));
                }
            }
        }
    }
}

/// Runs `attempt` under the stall detector unless the task already runs under one (a backend
/// called through [`super::retry::Retrying`]); backends used bare stay bounded this way.
pub async fn watch_unless_watched<T>(stall: Duration, attempt: impl Future<Output = T>) -> Result<T, Cut> {
    if current().is_some() { Ok(attempt.await) } else { watch(stall, None, attempt).await }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_millis(150);

    #[tokio::test]
    async fn an_attempt_that_keeps_moving_outlives_the_stall_limit() {
        let attempt = async {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                note();
            }
            "done"
        };
        assert_eq!(watch(STALL, None, attempt).await, Ok("done"));
    }

    #[tokio::test]
    async fn an_attempt_that_stops_moving_is_cut_after_the_stall_limit() {
        let started = Instant::now();
        let attempt = async {
            note();
            tokio::time::sleep(Duration::from_secs(60)).await;
        };
        assert_eq!(watch(STALL, None, attempt).await, Err(Cut::Stalled(STALL)));
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn progress_noted_from_another_task_counts() {
        let attempt = async {
            let progress = current().expect("inside watch");
            tokio::spawn(async move {
                for _ in 0..8 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    progress.note();
                }
            })
            .await
            .expect("task");
        };
        assert_eq!(watch(STALL, None, attempt).await, Ok(()));
    }

    #[tokio::test]
    async fn the_overall_limit_cuts_even_a_moving_attempt() {
        let attempt = async {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                note();
            }
        };
        let limit = Duration::from_millis(300);
        assert_eq!(watch(STALL, Some(limit), attempt).await, Err(Cut::Deadline(limit)));
    }
}
