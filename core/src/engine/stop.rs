//! Stopping background work early: at shutdown, when its collection is deleted, or when a
//! Lambda invocation's time is nearly up. Work that stops commits nothing (what it wrote
//! is unreferenced and collected later), so stopping is always safe.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Tells long work to stop: set when any of its tokens is cancelled.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    tokens: Vec<CancellationToken>,
}

impl Stop {
    /// Never set.
    pub fn never() -> Self {
        Self::default()
    }

    /// Set when `token` is cancelled.
    pub fn on(token: CancellationToken) -> Self {
        Self {
            tokens: vec![token],
        }
    }

    /// Set when this is set or `token` is cancelled.
    pub fn or(mut self, token: CancellationToken) -> Self {
        self.tokens.push(token);
        self
    }

    pub fn is_set(&self) -> bool {
        self.tokens.iter().any(CancellationToken::is_cancelled)
    }

    /// `Cancelled` naming `what` was stopped, if set.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.is_set() {
            Err(Error::cancelled(format!("{what} stopped")))
        } else {
            Ok(())
        }
    }

    /// Resolves once set.
    pub async fn wait(&self) {
        if self.tokens.is_empty() {
            return std::future::pending().await;
        }
        futures::future::select_all(self.tokens.iter().map(|t| Box::pin(t.cancelled()))).await;
    }
}

/// The token of each collection's running compaction, so deleting the collection stops it.
#[derive(Debug, Default)]
pub(crate) struct Running {
    tokens: Mutex<HashMap<Uuid, Vec<(u64, CancellationToken)>>>,
    next: std::sync::atomic::AtomicU64,
}

impl Running {
    /// Registers work on collection `id` under a new child of `parent`; dropping the
    /// guard unregisters it.
    pub fn start(&self, id: Uuid, parent: &CancellationToken) -> RunningGuard<'_> {
        let token = parent.child_token();
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().entry(id).or_default().push((n, token.clone()));
        RunningGuard {
            running: self,
            id,
            n,
            token,
        }
    }

    /// Stops all running work on collection `id`.
    pub fn cancel(&self, id: Uuid) {
        if let Some(tokens) = self.lock().remove(&id) {
            for (_, t) in tokens {
                t.cancel();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<(u64, CancellationToken)>>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Work registered with [`Running::start`]; `token` is cancelled when it should stop.
pub(crate) struct RunningGuard<'a> {
    running: &'a Running,
    id: Uuid,
    n: u64,
    pub token: CancellationToken,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let mut all = self.running.lock();
        if let Some(tokens) = all.get_mut(&self.id) {
            tokens.retain(|(n, _)| *n != self.n);
            if tokens.is_empty() {
                all.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stops_on_any_token_and_per_collection() {
        let root = CancellationToken::new();
        let running = Running::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let ga = running.start(a, &root);
        let gb = running.start(b, &root);
        let deadline = CancellationToken::new();
        let stop_a = Stop::on(ga.token.clone()).or(deadline.clone());
        let stop_b = Stop::on(gb.token.clone());
        assert!(!stop_a.is_set() && !stop_b.is_set());
        stop_a.check("a").unwrap();
        running.cancel(a);
        assert!(stop_a.is_set() && !stop_b.is_set());
        assert_eq!(
            stop_a.check("compaction").unwrap_err().code(),
            crate::error::ErrorCode::Cancelled
        );
        stop_a.wait().await;
        drop(ga);
        // The deadline alone, and shutdown for everything.
        let stop_c = Stop::on(running.start(a, &root).token.clone()).or(deadline.clone());
        deadline.cancel();
        assert!(stop_c.is_set());
        root.cancel();
        assert!(stop_b.is_set());
        drop(gb);
        assert!(running.lock().is_empty(), "every guard unregistered");
        assert!(!Stop::never().is_set());
    }
}
