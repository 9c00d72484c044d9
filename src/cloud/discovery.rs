//! Finding the worker an add created.
//!
//! VPSie's add call returns no identifier, so the only safe protocol is:
//! 1. list the cluster's workers and persist that snapshot (before the call, so a crash
//!    between the call and its answer still leaves us the "before");
//! 2. call add exactly once;
//! 3. list again until `find_new_worker(before, after, ..)` yields exactly one worker.
//!
//! A worker counts as new only if neither its identifier nor its hostname (compared
//! case-insensitively) was in the snapshot, so a hostname re-cased by the API or a
//! re-listed old worker can never be claimed.

use std::future::Future;

use super::types::{AddOutcome, CloudGroup, Offering, Worker};
use super::{CloudError, CloudProvider};

/// Result of diffing a before/after pair of worker lists.
#[derive(Clone, Debug, PartialEq)]
pub enum NewWorker {
    /// Nothing new yet: keep polling (until the caller's discovery deadline).
    NotYet,
    /// Exactly one candidate: claim it.
    Found(Worker),
    /// More than one candidate (someone else added concurrently, or the API created two):
    /// claim none automatically; report them so a human or reconciler can decide.
    Ambiguous(Vec<Worker>),
}

/// Diff two listings of the same cluster.
///
/// `group`: the group the add targeted; workers that the API places in another group are
/// ignored, and workers with unknown group are kept (the API may not say).
/// `hint`: what the add call answered; if it named an identifier or hostname, only that
/// worker is accepted.
pub fn find_new_worker(
    before: &[Worker],
    after: &[Worker],
    group: Option<u64>,
    hint: Option<&AddOutcome>,
) -> NewWorker {
    let was_known = |w: &Worker| before.iter().any(|b| b.identifier == w.identifier || b.hostname_matches(&w.hostname));
    let in_group = |w: &Worker| match (group, w.group_id) {
        (Some(g), Some(wg)) => g == wg,
        _ => true,
    };
    let hinted = |w: &Worker| match hint {
        Some(AddOutcome { identifier: Some(id), .. }) => &w.identifier == id,
        Some(AddOutcome { hostname: Some(h), .. }) => w.hostname_matches(h),
        _ => true,
    };
    let mut fresh: Vec<Worker> = after.iter().filter(|w| !was_known(w) && in_group(w) && hinted(w)).cloned().collect();
    // A listing may repeat an entry; the same identifier twice is one worker.
    fresh.sort_by(|a, b| a.identifier.cmp(&b.identifier));
    fresh.dedup_by(|a, b| a.identifier == b.identifier);
    match fresh.len() {
        0 => NewWorker::NotYet,
        1 => fresh.pop().map_or(NewWorker::NotYet, NewWorker::Found),
        _ => NewWorker::Ambiguous(fresh),
    }
}

/// The `ensure_group` protocol shared by the providers: list; if the group is missing,
/// call `create` once; then list again, because creation answers no id. After a failed
/// create the groups are listed anyway (a concurrent creator or a lost answer may have
/// made it exist), and the create's error is returned only if the group is still missing.
pub async fn ensure_group_by_listing<P, F, Fut>(
    provider: &P,
    cluster: &str,
    offering: &Offering,
    group_name: &str,
    create: F,
) -> Result<CloudGroup, CloudError>
where
    P: CloudProvider + ?Sized,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), CloudError>>,
{
    if let Some(g) = find_group(provider.groups(cluster).await?, offering, group_name)? {
        return Ok(g);
    }
    let created = create().await;
    let listed = provider.groups(cluster).await;
    match (created, listed) {
        (Ok(()), Ok(groups)) => find_group(groups, offering, group_name)?
            .ok_or_else(|| CloudError::transient("group created but not listed yet; look again later")),
        (Err(e), Ok(groups)) => find_group(groups, offering, group_name)?.ok_or(e),
        (Ok(()), Err(e)) => Err(e),
        (Err(e), Err(_)) => Err(e),
    }
}

/// The group named `name` (exact, then case-insensitive), checked to have the offering's
/// size: a same-named group of another size is `Permanent`, never silently reused.
pub fn find_group(groups: Vec<CloudGroup>, offering: &Offering, name: &str) -> Result<Option<CloudGroup>, CloudError> {
    let found = groups
        .iter()
        .find(|g| g.name == name)
        .or_else(|| groups.iter().find(|g| g.name.eq_ignore_ascii_case(name)))
        .cloned();
    match found {
        Some(g) if g.offering_id.is_some_and(|o| o != offering.id) => Err(CloudError::Permanent {
            status: None,
            message: format!("group {name:?} exists with size {:?}, not {}", g.offering_id, offering.id),
        }),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::types::WorkerState;

    fn w(id: &str, host: &str, group: Option<u64>) -> Worker {
        Worker {
            identifier: id.into(),
            hostname: host.into(),
            ip: None,
            private_ip: None,
            group_id: group,
            state: WorkerState::Provisioning,
            created: None,
        }
    }

    #[test]
    fn no_change_means_not_yet() {
        let before = vec![w("a", "c-slave-0001", Some(1))];
        assert_eq!(find_new_worker(&before, &before, Some(1), None), NewWorker::NotYet);
    }

    #[test]
    fn one_new_worker_is_found() {
        let before = vec![w("a", "c-slave-0001", Some(1))];
        let mut after = before.clone();
        after.push(w("b", "c-slave-0002", Some(1)));
        assert_eq!(find_new_worker(&before, &after, Some(1), None), NewWorker::Found(w("b", "c-slave-0002", Some(1))));
    }

    #[test]
    fn a_recased_hostname_of_an_old_worker_is_not_new() {
        let before = vec![w("a", "c-slave-0001", Some(1))];
        // Same worker, reported under a new identifier and upper-cased hostname.
        let after = vec![w("a2", "C-SLAVE-0001", Some(1))];
        assert_eq!(find_new_worker(&before, &after, Some(1), None), NewWorker::NotYet);
    }

    #[test]
    fn workers_in_another_group_are_ignored_but_unknown_groups_count() {
        let before = vec![];
        let after = vec![w("x", "c-slave-0009", Some(2))];
        assert_eq!(find_new_worker(&before, &after, Some(1), None), NewWorker::NotYet);
        let after = vec![w("y", "c-slave-000a", None)];
        assert!(matches!(find_new_worker(&before, &after, Some(1), None), NewWorker::Found(_)));
    }

    #[test]
    fn two_new_workers_are_ambiguous_and_nothing_is_claimed() {
        let after = vec![w("x", "h1", Some(1)), w("y", "h2", Some(1))];
        assert!(matches!(
            find_new_worker(&[], &after, Some(1), None),
            NewWorker::Ambiguous(v) if v.len() == 2
        ));
    }

    #[test]
    fn a_hint_from_the_add_answer_disambiguates() {
        let after = vec![w("x", "h1", Some(1)), w("y", "H2", Some(1))];
        let by_id = AddOutcome { identifier: Some("x".into()), hostname: None };
        assert_eq!(find_new_worker(&[], &after, Some(1), Some(&by_id)), NewWorker::Found(w("x", "h1", Some(1))));
        let by_host = AddOutcome { identifier: None, hostname: Some("h2".into()) };
        assert_eq!(find_new_worker(&[], &after, Some(1), Some(&by_host)), NewWorker::Found(w("y", "H2", Some(1))));
    }

    #[test]
    fn a_duplicated_entry_in_the_listing_is_one_worker() {
        let after = vec![w("x", "h1", Some(1)), w("x", "h1", Some(1))];
        assert!(matches!(find_new_worker(&[], &after, Some(1), None), NewWorker::Found(_)));
    }
}
