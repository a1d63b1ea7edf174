//! The reclaimer's one backoff, for the Node and Event requests' retries
//! (`node/retry.rs`) and the agent link's reconnects (`agent_link/watch.rs`).

use std::time::Duration;

use backon::ExponentialBuilder;
use kube::runtime::watcher::ExponentialBackoff;

/// kube-runtime's exponential backoff with jitter: a base delay doubling
/// from `first` up to `most`, each wait that plus up to as much again at
/// random (backon's jitter), so below `2 * most`.
pub fn exponential(first: Duration, most: Duration) -> ExponentialBackoff {
    ExponentialBackoff::from(
        ExponentialBuilder::default()
            .with_min_delay(first)
            .with_max_delay(most)
            .with_jitter()
            // backon's default stops after 3.
            .without_max_times(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_with_bounded_jitter_and_never_ends() {
        let mut b = exponential(Duration::from_millis(100), Duration::from_secs(1));
        let bases = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        for base in bases.into_iter().chain([1000; 100]) {
            let base = Duration::from_millis(base);
            let d = b.next().expect("endless");
            assert!(d >= base && d < 2 * base, "{d:?} vs {base:?}");
        }
    }
}
