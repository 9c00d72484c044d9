//! What wakes the autoscale loop between its periodic passes: a pod the scheduler gave up on, a
//! VPSieNode changing phase, a NodeGroup created or changed. Signals are batched, as Karpenter batches pod events: the pass starts once
//! no new signal arrived for an idle gap, or once the first signal has waited the maximum, so a burst of
//! a hundred pending pods is planned in one pass and a lone pod waits only the idle gap.
//!
//! The watches also count every change to what a pass reads, signal or not, so the loop can tell a
//! periodic pass that would see the same cluster as the last one (and skip it) from one that would not.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// The signal shared by the watches (which raise it) and the autoscale loop (which waits on it).
#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    /// Signals raised since the loop last took them.
    pending: AtomicU64,
    /// Every change to what a pass reads, waking or not, by what changed; never reset. See
    /// [`Wake::changes`].
    changes: [AtomicU64; Watched::ALL.len()],
}

/// What a counted change was to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    Node,
    Pod,
    PodDisruptionBudget,
    /// A NodeGroup or VPSieNode whose change asks for a pass now.
    Object,
}

impl Watched {
    pub const ALL: [Self; 4] = [Self::Node, Self::Pod, Self::PodDisruptionBudget, Self::Object];

    /// What changed, as a periodic pass's reason to run says it.
    pub fn changed(self) -> &'static str {
        match self {
            Self::Node => "a watched node changed",
            Self::Pod => "a watched pod changed",
            Self::PodDisruptionBudget => "a PDB changed",
            Self::Object => "a NodeGroup or VPSieNode asked for a pass",
        }
    }
}

/// The change counts at one moment, by [`Watched`] kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changes([u64; Watched::ALL.len()]);

impl Changes {
    /// The first kind whose count differs from `earlier`'s.
    pub fn since(&self, earlier: &Self) -> Option<Watched> {
        Watched::ALL.into_iter().find(|&w| self.0[w as usize] != earlier.0[w as usize])
    }

    pub fn of(&self, watched: Watched) -> u64 {
        self.0[watched as usize]
    }
}

/// How long the loop gathers signals before it plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// The pass starts once no signal came for this long...
    pub idle: Duration,
    /// ...or once the first signal of the batch has waited this long.
    pub max_wait: Duration,
}

impl Wake {
    pub fn pod_unschedulable(&self) {
        self.raise(Watched::Pod);
    }

    pub fn vpsienode_phase_changed(&self) {
        self.raise(Watched::Object);
    }

    pub fn group_changed(&self) {
        self.raise(Watched::Object);
    }

    /// Something a pass reads changed without asking for a pass now (a running pod moved, a node was
    /// relabelled): the next periodic pass must not be skipped as quiet.
    pub fn input_changed(&self, watched: Watched) {
        self.changes[watched as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many changes the watches have seen so far, by kind; the loop compares two readings to learn
    /// whether anything changed in between, and what.
    pub fn changes(&self) -> Changes {
        Changes(std::array::from_fn(|i| self.changes[i].load(Ordering::Relaxed)))
    }

    fn raise(&self, watched: Watched) {
        self.input_changed(watched);
        self.pending.fetch_add(1, Ordering::Relaxed);
        // Stores a permit when the loop is busy planning, so a signal raised during a pass is not lost.
        self.notify.notify_one();
    }

    /// Signals raised and not yet taken by [`Wake::batch`].
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Waits for a signal, then for the batch to close; returns how many signals it holds.
    /// Cancel-safe: signals not taken stay pending and wake the next call.
    pub async fn batch(&self, batching: Batching) -> u64 {
        self.notify.notified().await;
        let deadline = Instant::now() + batching.max_wait;
        loop {
            let quiet_until = (Instant::now() + batching.idle).min(deadline);
            tokio::select! {
                _ = tokio::time::sleep_until(quiet_until) => break,
                _ = self.notify.notified() => {
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        self.pending.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use tokio::time::Instant;

    use super::{Batching, Wake};

    const BATCHING: Batching = Batching { idle: Duration::from_secs(1), max_wait: Duration::from_secs(10) };

    /// Raises a signal at each offset (seconds after the start), on the paused test clock.
    fn raise_at(wake: &Arc<Wake>, offsets: &[f64]) {
        let wake = wake.clone();
        let offsets = offsets.to_vec();
        tokio::spawn(async move {
            let start = Instant::now();
            for at in offsets {
                tokio::time::sleep_until(start + Duration::from_secs_f64(at)).await;
                wake.pod_unschedulable();
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_planned_once_the_signals_pause_for_the_idle_gap() {
        let wake = Arc::new(Wake::default());
        let start = Instant::now();
        raise_at(&wake, &[0.0, 0.3, 0.6, 0.9, 4.0]);
        assert_eq!(wake.batch(BATCHING).await, 4);
        assert_eq!(start.elapsed(), Duration::from_millis(1900), "closes 1 s after the last signal of the burst");
        assert_eq!(wake.batch(BATCHING).await, 1, "the later signal opens a batch of its own");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_of_signals_is_planned_after_the_maximum_wait() {
        let wake = Arc::new(Wake::default());
        let start = Instant::now();
        let every_300_ms: Vec<f64> = (0..60).map(|i| f64::from(i) * 0.3).collect();
        raise_at(&wake, &every_300_ms);
        let first = wake.batch(BATCHING).await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(first, 34, "the signals at 0 s, 0.3 s, ... 9.9 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_signal_raised_while_no_one_waits_is_kept_for_the_next_batch() {
        let wake = Wake::default();
        wake.vpsienode_phase_changed();
        let start = Instant::now();
        assert_eq!(wake.batch(BATCHING).await, 1);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(wake.pending(), 0);
    }
}
