//! CPU-bound work awaited from async code: run on rayon's pool (a thread a core), so a
//! burst of it — a hundred spans of a cold query decrypted as they arrive, the probed
//! partitions' codes scored — neither blocks the runtime's workers nor starts a thread
//! per task as tokio's blocking pool would.

use std::panic::AssertUnwindSafe;

use crate::error::{Error, Result};

/// `work()` on rayon's pool; a panic in it is an internal error, not an abort.
pub async fn on_cpu<R: Send + 'static>(
    work: impl FnOnce() -> Result<R> + Send + 'static,
) -> Result<R> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let done = std::panic::catch_unwind(AssertUnwindSafe(work))
            .unwrap_or_else(|_| Err(Error::internal("a CPU task panicked")));
        let _ = tx.send(done);
    });
    rx.await
        .map_err(|e| Error::internal_from("a CPU task was dropped", e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_pool_and_panics_are_errors() {
        let main = std::thread::current().id();
        let (on, sum) = on_cpu(move || Ok((std::thread::current().id(), (1..=10u32).sum::<u32>())))
            .await
            .unwrap();
        assert_ne!(on, main);
        assert_eq!(sum, 55);
        let failed = on_cpu(|| Err::<(), _>(Error::invalid("no"))).await;
        assert!(failed.is_err());
        let panicked = on_cpu(|| -> Result<()> { panic!("boom") }).await;
        assert!(panicked.unwrap_err().to_string().contains("panicked"));
    }
}
