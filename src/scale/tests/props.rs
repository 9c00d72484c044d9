//! Arbitrary small clusters: the planners never panic, never plan past `maxNodes` or below `minNodes`,
//! and account for every pending pod exactly once.

use std::collections::{BTreeMap, BTreeSet};

use proptest::{prelude::*, sample::Index};

use super::*;
use crate::scale::{NewNodeReason, UnneededSince, plan_scale_down, plan_scale_up};

#[derive(Debug, Clone)]
struct GroupSeed {
    min: u32,
    extra: u32,
    current: Index,
    in_flight: Vec<Index>,
    leaving: u32,
    enabled: bool,
    per_scale_up: Option<u32>,
    offerings: Vec<(i64, i64, f64)>,
    tainted: bool,
    down_enabled: bool,
    threshold: u8,
    recent_scale_up: bool,
}

fn group_seed() -> impl Strategy<Value = GroupSeed> {
    (
        (0u32..=2, 0u32..=3, any::<Index>(), prop::collection::vec(any::<Index>(), 0..=2), 0u32..=1),
        (any::<bool>(), prop::option::of(1u32..=3), prop::collection::vec((1i64..=8, 1i64..=16, 0.0f64..10.0), 0..=3)),
        (prop::bool::weighted(0.2), prop::bool::weighted(0.8), 10u8..=100, prop::bool::weighted(0.2)),
    )
        .prop_map(
            |((min, extra, current, in_flight, leaving), (enabled, per, offerings), (tainted, down, th, recent))| {
                GroupSeed {
                    min,
                    extra,
                    current,
                    in_flight,
                    leaving,
                    enabled,
                    per_scale_up: per,
                    offerings,
                    tainted,
                    down_enabled: down,
                    threshold: th,
                    recent_scale_up: recent,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct PodSeed {
    cpu: i64,
    memory_mib: i64,
    placement: Option<Index>,
    selects_group: Option<Index>,
    tolerates: bool,
    do_not_disrupt: bool,
    bare: bool,
}

fn pod_seed() -> impl Strategy<Value = PodSeed> {
    (
        0i64..=4000,
        0i64..=4096,
        prop::option::of(any::<Index>()),
        prop::option::weighted(0.3, any::<Index>()),
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(cpu, memory_mib, placement, selects_group, tolerates, do_not_disrupt, bare)| PodSeed {
            cpu,
            memory_mib,
            placement,
            selects_group,
            tolerates,
            do_not_disrupt,
            bare,
        })
}

fn build(groups: &[GroupSeed], extra_nodes: usize, pods: &[PodSeed]) -> Snapshot {
    let mut snap = Snapshot::default();
    for (gi, seed) in groups.iter().enumerate() {
        let name = format!("g{gi}");
        let max = seed.min.max(1) + seed.extra;
        let current = seed.current.index(max as usize + 1) as u32;
        let offerings: Vec<OfferingInfo> = seed
            .offerings
            .iter()
            .enumerate()
            .map(|(oi, (cores, gib, price))| offering(&format!("{name}-o{oi}"), *cores, *gib, *price))
            .collect();
        let in_flight = if offerings.is_empty() {
            vec![]
        } else {
            seed.in_flight.iter().map(|i| offerings[i.index(offerings.len())].id.clone()).collect()
        };
        snap.groups.push(group(&name, seed.min, max, offerings).with(|g| {
            g.current_nodes = current;
            g.in_flight = in_flight;
            g.leaving_nodes = seed.leaving;
            g.scale_up_enabled = seed.enabled;
            g.max_nodes_per_scale_up = seed.per_scale_up;
            if seed.tainted {
                g.taints = vec![taint("dedicated", &name, TaintEffect::NoSchedule)];
            }
            g.scale_down.enabled = seed.down_enabled;
            g.scale_down.utilization_threshold_percent = seed.threshold;
            g.last_scale_up = seed.recent_scale_up.then(|| at(-60));
        }));
        for ni in 0..current {
            let taints = snap.groups[gi].taints.clone();
            snap.nodes.push(
                node(&format!("{name}-n{ni}"), Some(&name), 1 + i64::from(ni % 4), 2).with(|n| n.taints = taints),
            );
        }
    }
    for ni in 0..extra_nodes {
        snap.nodes.push(node(&format!("free-{ni}"), None, 2, 4));
    }
    for (pi, seed) in pods.iter().enumerate() {
        let mut p = match (&seed.placement, snap.nodes.is_empty()) {
            (Some(i), false) => {
                on(pod(&format!("p{pi}"), seed.cpu, seed.memory_mib), &snap.nodes[i.index(snap.nodes.len())].name)
            }
            _ => pending(&format!("p{pi}"), seed.cpu, seed.memory_mib),
        };
        if let Some(i) = &seed.selects_group {
            p.node_selector = labels(&[("pool", &format!("g{}", i.index(groups.len())))]);
        }
        if seed.tolerates {
            p.tolerations =
                vec![Toleration { key: None, operator: TolerationOperator::Exists, value: None, effect: None }].into();
        }
        p.do_not_disrupt = seed.do_not_disrupt;
        if seed.bare {
            p.controller_kind = None;
        }
        snap.pods.push(p.into());
    }
    snap
}

proptest! {
    #[test]
    fn scale_up_never_passes_max_nodes_and_accounts_for_every_pending_pod_once(
        groups in prop::collection::vec(group_seed(), 1..=3),
        extra_nodes in 0usize..=2,
        pods in prop::collection::vec(pod_seed(), 0..=12),
    ) {
        let snap = build(&groups, extra_nodes, &pods);
        let plan = plan_scale_up(&snap, now());
        for planned in &plan.groups {
            let g = snap.groups.iter().find(|g| g.name == planned.group.name).expect("planned group exists");
            let existing = g.current_nodes + g.leaving_nodes + g.in_flight.len() as u32;
            prop_assert!(existing + planned.nodes.len() as u32 <= g.max_nodes.max(existing), "{planned:?} past max of {g:?}");
            let for_pods = planned.nodes.iter().filter(|n| n.reason == NewNodeReason::PendingPods).count() as u32;
            prop_assert!(g.scale_up_enabled || for_pods == 0);
            prop_assert!(for_pods <= g.max_nodes_per_scale_up.unwrap_or(u32::MAX));
            let count: u32 = planned.offerings.iter().map(|(_, n)| n).sum();
            prop_assert_eq!(count as usize, planned.nodes.len());
        }
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        let planned_pods = plan.groups.iter().flat_map(|g| g.nodes.iter().flat_map(|n| n.pods.iter()));
        for pod in planned_pods.chain(plan.absorbed.iter().map(|a| &a.pod)).chain(plan.unschedulable.iter().map(|u| &u.pod)) {
            *seen.entry(pod.to_string()).or_default() += 1;
        }
        let pending: BTreeSet<String> = snap.pods.iter().filter(|p| p.is_pending_unschedulable()).map(|p| p.key()).collect();
        prop_assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), pending);
        prop_assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    }

    #[test]
    fn scale_down_never_goes_below_min_nodes_nor_moves_pods_onto_removed_nodes(
        groups in prop::collection::vec(group_seed(), 1..=3),
        extra_nodes in 0usize..=2,
        pods in prop::collection::vec(pod_seed(), 0..=12),
    ) {
        let snap = build(&groups, extra_nodes, &pods);
        let plan = plan_scale_down(&snap, now(), &UnneededSince::new());
        let removed: BTreeSet<&str> = plan.remove.iter().map(|r| r.node.as_str()).collect();
        prop_assert_eq!(removed.len(), plan.remove.len());
        for g in &snap.groups {
            let gone = plan.remove.iter().filter(|r| r.group.name == g.name).count() as u32;
            prop_assert!(gone <= 1);
            prop_assert!(gone == 0 || (g.current_nodes > g.min_nodes && g.scale_down.enabled && g.last_scale_up.is_none()));
        }
        for removal in &plan.remove {
            prop_assert!(snap.pods_on(&removal.node).all(|p| !p.do_not_disrupt));
            for m in &removal.moves {
                prop_assert!(!removed.contains(m.to.as_str()), "{m:?} lands on a removed node");
            }
        }
        prop_assert!(plan.unneeded_since.keys().all(|n| snap.node(n).is_some()));
    }
}
