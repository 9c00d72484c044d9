//! Expectations: the VPSieNodes this replica created that its watch has not delivered yet.
//!
//! The autoscale loop counts in-flight capacity from its watch cache. A VPSieNode created in one pass may
//! not be in the cache by the next, and without a record of it that pass would see the same pending pods
//! with no capacity on the way and add again. The record is dropped once the watch shows the object (from
//! then on the cache counts it) or after [`EXPECTATION_TTL`], so a lost object cannot hold capacity forever.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Far longer than any watch delay; short enough that a create whose object vanished is forgotten soon.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(120);

#[derive(Default)]
pub struct Expectations {
    created: Mutex<BTreeMap<String, Expected>>,
}

struct Expected {
    group: String,
    offering: String,
    at: Instant,
}

impl Expectations {
    /// Records a VPSieNode (`namespace/name`) of `group` (`namespace/name`) just created with `offering`.
    pub fn created(&self, vpsienode: &str, group: &str, offering: &str, at: Instant) {
        let mut created = self.created.lock().unwrap_or_else(|p| p.into_inner());
        created
            .insert(vpsienode.to_string(), Expected { group: group.to_string(), offering: offering.to_string(), at });
    }

    /// The offerings still on their way per group key: created, not yet in the cache (`seen` says which
    /// VPSieNodes it holds), and not expired. Observed and expired records are dropped.
    pub fn unobserved(&self, seen: impl Fn(&str) -> bool, now: Instant) -> BTreeMap<String, Vec<String>> {
        let mut created = self.created.lock().unwrap_or_else(|p| p.into_inner());
        created.retain(|name, e| !seen(name) && now.saturating_duration_since(e.at) < EXPECTATION_TTL);
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in created.values() {
            out.entry(e.group.clone()).or_default().push(e.offering.clone());
        }
        out
    }

    /// Records the watch has not confirmed after `after`: normally a watch delay of milliseconds, so one
    /// this old was probably created and deleted between two passes (a person deleted it at once), and
    /// without a check it would hold phantom capacity until [`EXPECTATION_TTL`].
    pub fn overdue(&self, after: Duration, now: Instant) -> Vec<String> {
        let created = self.created.lock().unwrap_or_else(|p| p.into_inner());
        created.iter().filter(|(_, e)| now.saturating_duration_since(e.at) >= after).map(|(n, _)| n.clone()).collect()
    }

    /// Drops a record whose object is known to be gone.
    pub fn forget(&self, vpsienode: &str) {
        self.created.lock().unwrap_or_else(|p| p.into_inner()).remove(vpsienode);
    }

    /// Forgets everything: a replica that stops leading no longer knows what the next leader creates.
    pub fn clear(&self) {
        self.created.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_vpsienode_the_watch_has_not_shown_counts_as_in_flight() {
        let e = Expectations::default();
        let t = Instant::now();
        e.created("ns/web-abcde", "ns/web", "plan-2", t);
        let unseen = e.unobserved(|_| false, t + Duration::from_secs(3));
        assert_eq!(unseen.get("ns/web"), Some(&vec!["plan-2".to_string()]));
    }

    #[test]
    fn once_the_watch_shows_it_the_record_is_dropped_so_it_is_not_counted_twice() {
        let e = Expectations::default();
        let t = Instant::now();
        e.created("ns/web-abcde", "ns/web", "plan-2", t);
        assert!(e.unobserved(|name| name == "ns/web-abcde", t).is_empty());
        // Dropped, not merely hidden: a later pass whose cache lost it again does not bring it back.
        assert!(e.unobserved(|_| false, t).is_empty());
    }

    #[test]
    fn a_record_the_watch_never_confirms_expires() {
        let e = Expectations::default();
        let t = Instant::now();
        e.created("ns/web-abcde", "ns/web", "plan-2", t);
        assert!(e.unobserved(|_| false, t + EXPECTATION_TTL).is_empty());
    }

    #[test]
    fn a_record_older_than_a_watch_delay_is_overdue_and_can_be_forgotten() {
        let e = Expectations::default();
        let t = Instant::now();
        e.created("ns/web-old", "ns/web", "plan-2", t);
        e.created("ns/web-new", "ns/web", "plan-2", t + Duration::from_secs(9));
        assert_eq!(e.overdue(Duration::from_secs(5), t + Duration::from_secs(10)), vec!["ns/web-old".to_string()]);
        e.forget("ns/web-old");
        let unseen = e.unobserved(|_| false, t + Duration::from_secs(10));
        assert_eq!(unseen.get("ns/web").map(Vec::len), Some(1), "only the forgotten record is gone");
    }

    #[test]
    fn records_are_grouped_by_their_node_group() {
        let e = Expectations::default();
        let t = Instant::now();
        e.created("a/web-1", "a/web", "p1", t);
        e.created("a/web-2", "a/web", "p2", t);
        e.created("b/web-1", "b/web", "p1", t);
        let unseen = e.unobserved(|_| false, t);
        assert_eq!(unseen.get("a/web").map(Vec::len), Some(2));
        assert_eq!(unseen.get("b/web").map(Vec::len), Some(1));
        e.clear();
        assert!(e.unobserved(|_| false, t).is_empty());
    }
}
