//! Bin-packing pending pods onto new nodes of one group, choosing offerings by price per pod.
//!
//! First-fit decreasing: pods come largest first; each goes on the first open node it fits. When none
//! has room, a node is opened on the offering with the lowest price per pod it would hold, counting the
//! pods still waiting that would follow it there. That prefers one large node over two small ones when
//! the large one is cheaper per pod, and a small one for the last stragglers.

use std::cmp::Ordering;

use super::{
    Target,
    fit::{self, Target as FitTarget},
    priced, template,
    up::Rejection,
};
use crate::snapshot::{GroupInfo, OfferingInfo, PodInfo, Resources};

/// A node that does not exist yet and the pods planned onto it.
#[derive(Debug, Clone)]
pub(crate) struct Bin<'a> {
    pub offering: &'a OfferingInfo,
    pub target: Target,
    pub pods: Vec<&'a PodInfo>,
}

impl<'a> Bin<'a> {
    pub fn new(group: &GroupInfo, offering: &'a OfferingInfo, overhead: Resources) -> Self {
        Bin { offering, target: template(group, offering, overhead), pods: Vec::new() }
    }

    pub fn try_place(&mut self, pod: &'a PodInfo) -> bool {
        if fit::check(pod, &self.target).is_err() {
            return false;
        }
        self.target.reserve(pod);
        self.pods.push(pod);
        true
    }
}

/// Packs `pods` (largest first) onto the group's `bins`, opening at most `room` new ones.
/// Returns the pods that did not fit within `room`.
pub(crate) fn pack<'a>(
    group: &'a GroupInfo,
    overhead: Resources,
    pods: Vec<&'a PodInfo>,
    bins: &mut Vec<Bin<'a>>,
    room: &mut u32,
) -> Vec<&'a PodInfo> {
    let mut overflow = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        if bins.iter_mut().any(|b| b.try_place(pod)) {
            continue;
        }
        if *room == 0 {
            overflow.push(*pod);
            continue;
        }
        let waiting = &pods[i + 1..];
        let best = group
            .offerings
            .iter()
            .filter(|o| priced(o))
            .filter_map(|o| {
                let mut trial = Bin::new(group, o, overhead);
                trial.try_place(pod).then(|| (o, o.hourly_price / held_with(&mut trial, waiting) as f64))
            })
            .min_by(|(a, per_pod_a), (b, per_pod_b)| cheaper(a, *per_pod_a, b, *per_pod_b));
        match best {
            Some((offering, _)) => {
                let mut bin = Bin::new(group, offering, overhead);
                bin.try_place(pod);
                bins.push(bin);
                *room -= 1;
            }
            None => overflow.push(*pod),
        }
    }
    overflow
}

/// How many pods a trial node holds once the waiting pods that fit have followed the first.
fn held_with<'a>(trial: &mut Bin<'a>, waiting: &[&'a PodInfo]) -> usize {
    for pod in waiting {
        trial.try_place(pod);
    }
    trial.pods.len()
}

/// Lower price per pod, then lower price, then offering id: the same input always gives the same plan.
fn cheaper(a: &OfferingInfo, per_pod_a: f64, b: &OfferingInfo, per_pod_b: f64) -> Ordering {
    per_pod_a.total_cmp(&per_pod_b).then(a.hourly_price.total_cmp(&b.hourly_price)).then_with(|| a.id.cmp(&b.id))
}

/// Price per pod-hour of the cheapest offering of the group that `pod` fits on, with many copies of it
/// sharing a node; or the reason it fits none (taken from the largest offering, so that a resource
/// shortage is reported against the most room the group could give).
pub(crate) fn cost_per_pod(group: &GroupInfo, overhead: Resources, pod: &PodInfo) -> Result<f64, Rejection> {
    let mut best: Option<f64> = None;
    let mut largest: Option<(&OfferingInfo, fit::Misfit)> = None;
    for offering in group.offerings.iter().filter(|o| priced(o)) {
        let target: FitTarget = template(group, offering, overhead);
        match fit::check(pod, &target) {
            Ok(()) => {
                let per_pod = offering.hourly_price / target.copies_of(pod).max(1) as f64;
                best = Some(best.map_or(per_pod, |b| b.min(per_pod)));
            }
            Err(misfit) => {
                let bigger = largest
                    .as_ref()
                    .is_none_or(|(l, _)| (offering.cpu_millis, offering.memory_bytes) > (l.cpu_millis, l.memory_bytes));
                if bigger {
                    largest = Some((offering, misfit));
                }
            }
        }
    }
    match (best, largest) {
        (Some(cost), _) => Ok(cost),
        (None, Some((offering, misfit))) => Err(Rejection::Misfit { offering: offering.id.clone(), misfit }),
        (None, None) => Err(Rejection::NoOfferings),
    }
}
