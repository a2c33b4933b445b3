//! Per-caller rate limits: a token bucket per principal (per API key; one bucket for the
//! anonymous local caller). A request over the limit is 429 `RateLimitError` with
//! `Retry-After` in whole seconds.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

/// Token buckets keyed by principal id.
pub struct RateLimits {
    limiter: RateLimiter<String, HashMapStateStore<String>, DefaultClock>,
    clock: DefaultClock,
    per_second: u32,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("per_second", &self.per_second)
            .finish()
    }
}

impl RateLimits {
    /// `per_second` requests per second per caller on average, bursts of up to `burst`.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            limiter: RateLimiter::hashmap(quota),
            clock: DefaultClock::default(),
            per_second: per_second.get(),
        }
    }

    /// `Ok` if `principal` may make a request now, else how long until it may.
    pub fn check(&self, principal: &str) -> Result<(), Duration> {
        // Keys are few (one per API key); drop idle buckets now and then.
        if self.limiter.len() > 10_000 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&principal.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_caller_separately() {
        let limits = RateLimits::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(3).unwrap());
        for _ in 0..3 {
            limits.check("a").unwrap();
        }
        let wait = limits.check("a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        limits.check("b").unwrap();
    }
}
