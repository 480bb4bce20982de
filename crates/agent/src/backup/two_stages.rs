//! Two asynchronous stages that run side by side (backup-push: compress, then upload), each with
//! up to `concurrency` items in flight, and at most `2 × concurrency` items between the start of
//! the first and the end of the second (each holds a buffer: the bound is the memory).
//!
//! Chained directly (`.buffer_unordered(n)` twice), the second stage polls the first only while
//! it has a free slot: with every slot of the second stage busy, the first stops starting work,
//! and at a concurrency of one the two stages take turns. Here each stage is polled on its own,
//! so the first runs ahead of the second as far as the bound allows.

use std::future::Future;
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Runs `first` on every item of `input` and `second` on every result of `first`, each stage up
/// to `concurrency` items at once, in any order, and at most `2 × concurrency` items from the
/// start of `first` to the end of `second`. Returns the first stage's outcome and the second
/// stage's results.
///
/// An error in `second` stops both stages (the first sees the queue close and returns
/// `stopped()`): the caller reports the second stage's error. An error in `first` stops the
/// first stage; the second finishes what it already has, so its results are those of the items
/// that made it through.
pub async fn in_two_stages<In, Mid, Out, E, F1, F2>(
    input: impl Stream<Item = In>,
    concurrency: usize,
    mut first: impl FnMut(In) -> F1,
    mut second: impl FnMut(Mid) -> F2,
    stopped: impl Fn() -> E,
) -> (Result<(), E>, Result<Vec<Out>, E>)
where
    F1: Future<Output = Result<Mid, E>>,
    F2: Future<Output = Result<Out, E>>,
{
    let concurrency = concurrency.max(1);
    // Taken before an item enters the first stage, given back when it leaves the second.
    let between = Arc::new(Semaphore::new(2 * concurrency));
    let (sender, receiver) = tokio::sync::mpsc::channel::<(Mid, Option<OwnedSemaphorePermit>)>(1);
    let first_stage = async {
        let outcome = input
            .then(|item| {
                let between = between.clone();
                // The semaphore is never closed: the permit is always there.
                async move { (item, between.acquire_owned().await.ok()) }
            })
            .map(|(item, permit)| {
                let work = first(item);
                async move { work.await.map(|done| (done, permit)) }
            })
            .buffer_unordered(concurrency)
            .try_for_each(|item| {
                let sender = sender.clone();
                let stopped = &stopped;
                async move { sender.send(item).await.map_err(|_| stopped()) }
            })
            .await;
        drop(sender);
        outcome
    };
    let second_stage = async {
        let items = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        items
            .map(|(item, permit)| {
                let work = second(item);
                async move {
                    let done = work.await;
                    drop(permit);
                    done
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<Out>>()
            .await
    };
    tokio::join!(first_stage, second_stage)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// With the second stage's only slot held, the first stage goes on with the next item (item
    /// 0 waits in the second stage, item 1 is done and waits for a slot there), and no further:
    /// two items between the stages at a concurrency of one.
    #[tokio::test]
    async fn the_first_stage_runs_ahead_while_the_second_is_busy() {
        let first_done = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let run = {
            let (first_done, release) = (first_done.clone(), release.clone());
            tokio::spawn(async move {
                in_two_stages(
                    futures::stream::iter(0..6u32),
                    1,
                    |item| {
                        let first_done = first_done.clone();
                        async move {
                            first_done.fetch_add(1, Ordering::SeqCst);
                            Ok::<u32, String>(item * 10)
                        }
                    },
                    |item| {
                        let release = release.clone();
                        async move {
                            if item == 0 {
                                release.notified().await;
                            }
                            Ok::<u32, String>(item + 1)
                        }
                    },
                    || "stopped".to_string(),
                )
                .await
            })
        };
        let ahead = tokio::time::timeout(Duration::from_secs(10), async {
            while first_done.load(Ordering::SeqCst) < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        // Time for a third item to start, were the bound not kept.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let held = first_done.load(Ordering::SeqCst);
        release.notify_one();
        assert!(ahead.is_ok(), "the first stage stopped at {held} item while the second was busy");
        assert_eq!(held, 2, "more items between the stages than two per slot");
        let (first, second) = run.await.expect("pipeline task");
        assert_eq!(first, Ok(()));
        let mut results = second.expect("second stage");
        results.sort_unstable();
        assert_eq!(results, vec![1, 11, 21, 31, 41, 51]);
    }

    #[tokio::test]
    async fn an_error_in_the_second_stage_stops_the_first() {
        let first_done = Arc::new(AtomicUsize::new(0));
        let counted = first_done.clone();
        let (first, second) = in_two_stages(
            futures::stream::iter(0..1000u32),
            2,
            |item| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    Ok::<u32, String>(item)
                }
            },
            |item| async move { if item == 3 { Err(format!("upload {item} failed")) } else { Ok(item) } },
            || "stopped".to_string(),
        )
        .await;
        assert_eq!(second, Err("upload 3 failed".to_string()));
        assert_eq!(first, Err("stopped".to_string()));
        assert!(first_done.load(Ordering::SeqCst) < 20, "the first stage went on after the second failed");
    }

    #[tokio::test]
    async fn an_error_in_the_first_stage_keeps_what_went_through() {
        let (first, second) = in_two_stages(
            futures::stream::iter(0..10u32),
            1,
            |item| async move { if item == 4 { Err(format!("compress {item} failed")) } else { Ok(item) } },
            |item| async move { Ok::<u32, String>(item) },
            || "stopped".to_string(),
        )
        .await;
        assert_eq!(first, Err("compress 4 failed".to_string()));
        let mut through = second.expect("second stage");
        through.sort_unstable();
        assert_eq!(through, vec![0, 1, 2, 3]);
    }
}
