//! Capped exponential backoff with jitter, for reconnecting to the agent and
//! retrying API writes.

use std::time::Duration;

/// Delays that double from `initial` up to `cap`, each with up to 25%
/// subtracted at random so that many nodes do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    /// A backoff starting at `initial` and never exceeding `cap`.
    pub fn new(initial: Duration, cap: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id());
        Self {
            initial,
            cap,
            next: initial.min(cap),
            seed: seed | 1,
        }
    }

    /// The delay to wait now; the following one is twice as long (capped).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        // Cap with `min`: the next delay may grow but never past the cap.
        self.next = (self.next * 2).min(self.cap);
        let jitter = base.mul_f64(0.25 * self.random_unit());
        base - jitter
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.cap);
    }

    /// xorshift64: good enough to spread retries, no dependency needed.
    fn random_unit(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut bases = vec![];
        for _ in 0..8 {
            let d = b.next_delay();
            bases.push(d);
        }
        let expected = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, base) in bases.iter().zip(expected) {
            let base = Duration::from_millis(base);
            assert!(*d <= base && *d >= base.mul_f64(0.75), "{d:?} vs {base:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn an_initial_above_the_cap_is_capped() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(1));
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
