//! Prometheus metrics: one struct per component, all registered into one registry that `/metrics`
//! serves. Labels are bounded enums or kinds, never node or pod names.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Every metric of the process.
pub struct Metrics {
    pub controller: ControllerMetrics,
    pub lifecycle: LifecycleMetrics,
    pub leader: LeaderMetrics,
    pub rebalancer: RebalancerMetrics,
}

impl Metrics {
    /// Creates and registers every metric; the registry then goes to the HTTP server.
    pub fn register(registry: &mut Registry) -> Self {
        Self {
            controller: ControllerMetrics::register(registry),
            lifecycle: LifecycleMetrics::register(registry),
            leader: LeaderMetrics::register(registry),
            rebalancer: RebalancerMetrics::register(registry),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub kind: &'static str,
}

/// Reconcile loop health for each controller.
pub struct ControllerMetrics {
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabel, Histogram, fn() -> Histogram>,
    /// 1 once the watches of this replica have listed everything.
    pub watches_synced: Gauge,
    /// Updates and deletions the large watches (pods, nodes, PDBs) received, by kind: what the caches
    /// cost at steady state follows this rate.
    pub watch_events: Family<KindLabel, Counter>,
    /// Complete lists of everything by the large watches, by kind: one at start, and one more each time a
    /// watch lost its place (its resource version expired) and had to list again, which at 30,000 pods
    /// costs seconds of CPU.
    pub watch_lists: Family<KindLabel, Counter>,
}

impl ControllerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 14))),
            watches_synced: Gauge::default(),
            watch_events: Family::default(),
            watch_lists: Family::default(),
        };
        registry.register(
            "vpsie_autoscaler_reconcile",
            "Reconciliations by controller and result: success; requeue (a step waiting for something, e.g. \
             a drain or a worker to be listed, not a failure); error",
            m.reconciles.clone(),
        );
        registry.register(
            "vpsie_autoscaler_reconcile_errors",
            "Failed reconciliations by controller and error kind",
            m.errors.clone(),
        );
        registry.register(
            "vpsie_autoscaler_reconcile_duration_seconds",
            "Time spent in one reconciliation, by controller (only reconciles run while leading)",
            m.duration.clone(),
        );
        registry.register("vpsie_autoscaler_watches_synced", "1 once every watch has synced", m.watches_synced.clone());
        registry.register(
            "vpsie_autoscaler_watch_events",
            "Updates and deletions received by the pod, node and PDB watches (initial lists not counted), by kind",
            m.watch_events.clone(),
        );
        registry.register(
            "vpsie_autoscaler_watch_lists",
            "Complete lists by the pod, node and PDB watches, by kind: 1 after start, more when a watch had to \
             list everything again",
            m.watch_lists.clone(),
        );
        m
    }
}

/// Leader election state of this replica.
pub struct LeaderMetrics {
    pub is_leader: Gauge,
    pub transitions: Counter,
}

impl LeaderMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self { is_leader: Gauge::default(), transitions: Counter::default() };
        registry.register(
            "vpsie_autoscaler_leader",
            "1 while this replica holds the leader Lease",
            m.is_leader.clone(),
        );
        registry.register(
            "vpsie_autoscaler_leader_transitions",
            "Times this replica gained or lost leadership",
            m.transitions.clone(),
        );
        m
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RebalanceOperation {
    rebalance,
    rollback,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum OperationResult {
    success,
    failure,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: RebalanceOperation,
    pub result: OperationResult,
}

/// The rebalancer's operations, under the names the rollback runbook and its alerts use.
pub struct RebalancerMetrics {
    /// `rebalancer_operations_total{operation="rebalance|rollback", result="success|failure"}`.
    pub operations: Family<OperationLabels, Counter>,
    /// Operations currently running (not ended).
    pub in_progress: Gauge,
    /// Nodes replaced by successful steps.
    pub nodes_replaced: Counter,
    /// USD per hour saved by the replacements that completed.
    pub realized_hourly_savings: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Seconds from pre-flight to the end of an operation, whichever way it ended.
    pub duration: Histogram,
}

impl RebalancerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            operations: Family::default(),
            in_progress: Gauge::default(),
            nodes_replaced: Counter::default(),
            realized_hourly_savings: Counter::default(),
            duration: Histogram::new([10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]),
        };
        // Every series exists from the start at zero, so `increase()` in alerts sees the first event.
        for operation in [RebalanceOperation::rebalance, RebalanceOperation::rollback] {
            for result in [OperationResult::success, OperationResult::failure] {
                let _ = m.operations.get_or_create(&OperationLabels { operation, result });
            }
        }
        registry.register("rebalancer_operations", "Rebalance and rollback operations by result", m.operations.clone());
        registry.register(
            "rebalancer_operations_in_progress",
            "Rebalance operations not yet ended",
            m.in_progress.clone(),
        );
        registry.register(
            "rebalancer_nodes_replaced",
            "Nodes replaced by rebalance operations",
            m.nodes_replaced.clone(),
        );
        registry.register(
            "rebalancer_realized_hourly_savings_dollars",
            "USD per hour saved by completed replacements",
            m.realized_hourly_savings.clone(),
        );
        registry.register(
            "rebalancer_operation_duration_seconds",
            "Duration of rebalance operations, pre-flight to end",
            m.duration.clone(),
        );
        m
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    pub trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    /// NodeGroups of the same name in two namespaces are two groups, so two series.
    pub namespace: String,
    pub nodegroup: String,
}

/// Workers coming and going: adds, durations, scale decisions, sizes.
pub struct LifecycleMetrics {
    pub add_calls: Counter,
    /// Workers deleted by the leak sweep because no VPSieNode claimed them.
    pub orphans_deleted: Counter,
    /// VPSieNodes found stored in a namespace that no longer exists, whose VM and Node were released.
    pub stranded_released: Counter,
    /// Of those, the ones still stored: only a person can remove them (by creating the namespace again).
    pub stranded_vpsienodes: Gauge,
    pub cloud_errors: Family<KindLabel, Counter>,
    pub provisioning_duration: Histogram,
    pub drain_duration: Histogram,
    pub scale_ups: Family<ResultLabel, Counter>,
    pub scale_downs: Family<ResultLabel, Counter>,
    pub vpsienodes: Family<PhaseLabel, Gauge>,
    /// Node group sizes, by the NodeGroup's namespace and name, which operators choose and keep few.
    pub group_size: Family<GroupLabel, Gauge>,
    pub pending_unschedulable_pods: Gauge,
    /// Of those, the pods no NodeGroup can take (what `NoNodeGroupFits` Events name).
    pub unschedulable_without_group: Gauge,
    /// Per phase, how long the VPSieNode longest in it has been there (seconds since its last phase
    /// transition; 0 when no VPSieNode is in the phase). Feeds the "stuck in a phase" alert.
    pub phase_age_max: Family<PhaseLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Planning passes, by what started them: a watch event (after batching) or the periodic safety net.
    pub passes: Family<TriggerLabel, Counter>,
    /// Periodic passes skipped because nothing they read changed and nothing waited on the clock.
    pub quiet_passes_skipped: Counter,
    /// Seconds from a pod becoming unschedulable to the add call made for it.
    pub scale_up_latency: Histogram,
}

impl LifecycleMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            add_calls: Counter::default(),
            orphans_deleted: Counter::default(),
            stranded_released: Counter::default(),
            stranded_vpsienodes: Gauge::default(),
            cloud_errors: Family::default(),
            provisioning_duration: Histogram::new(exponential_buckets(5.0, 2.0, 10)),
            drain_duration: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            scale_ups: Family::default(),
            scale_downs: Family::default(),
            vpsienodes: Family::default(),
            group_size: Family::default(),
            pending_unschedulable_pods: Gauge::default(),
            unschedulable_without_group: Gauge::default(),
            phase_age_max: Family::default(),
            passes: Family::default(),
            quiet_passes_skipped: Counter::default(),
            scale_up_latency: Histogram::new(exponential_buckets(0.5, 2.0, 12)),
        };
        registry.register("vpsie_autoscaler_worker_adds", "Add-worker calls made to VPSie", m.add_calls.clone());
        registry.register(
            "vpsie_autoscaler_orphan_workers_deleted",
            "Workers no VPSieNode claimed, deleted by the leak sweep",
            m.orphans_deleted.clone(),
        );
        registry.register(
            "vpsie_autoscaler_stranded_vpsienodes_released",
            "VPSieNodes stored in a namespace that no longer exists, whose VM and Node were released",
            m.stranded_released.clone(),
        );
        registry.register(
            "vpsie_autoscaler_stranded_vpsienodes",
            "Released VPSieNodes still stored in a namespace that no longer exists (create the namespace again to remove them)",
            m.stranded_vpsienodes.clone(),
        );
        registry.register(
            "vpsie_autoscaler_cloud_errors",
            "Cloud refusals that failed a VPSieNode, by kind",
            m.cloud_errors.clone(),
        );
        registry.register(
            "vpsie_autoscaler_provisioning_duration_seconds",
            "From the add request to the node being Ready",
            m.provisioning_duration.clone(),
        );
        registry.register(
            "vpsie_autoscaler_drain_duration_seconds",
            "Duration of successful drains",
            m.drain_duration.clone(),
        );
        registry.register(
            "vpsie_autoscaler_scale_ups",
            "Scale-up decisions carried out, by result",
            m.scale_ups.clone(),
        );
        registry.register("vpsie_autoscaler_scale_downs", "Scale-down attempts, by result", m.scale_downs.clone());
        registry.register("vpsie_autoscaler_vpsienodes", "VPSieNodes by phase", m.vpsienodes.clone());
        registry.register(
            "vpsie_autoscaler_nodegroup_size",
            "Non-terminating VPSieNodes per NodeGroup",
            m.group_size.clone(),
        );
        registry.register(
            "vpsie_autoscaler_planning_passes",
            "Planning passes of the autoscale loop, by trigger (event or periodic)",
            m.passes.clone(),
        );
        registry.register(
            "vpsie_autoscaler_planning_passes_skipped",
            "Periodic passes skipped: nothing they read had changed since the last pass and no timer of it was due",
            m.quiet_passes_skipped.clone(),
        );
        registry.register(
            "vpsie_autoscaler_pending_unschedulable_pods",
            "Pods the scheduler could not place",
            m.pending_unschedulable_pods.clone(),
        );
        registry.register(
            "vpsie_autoscaler_unschedulable_pods_without_group",
            "Pods the scheduler could not place and no NodeGroup can take",
            m.unschedulable_without_group.clone(),
        );
        registry.register(
            "vpsie_autoscaler_vpsienode_phase_age_max_seconds",
            "Per phase, seconds the VPSieNode longest in that phase has spent in it (0 when none is)",
            m.phase_age_max.clone(),
        );
        registry.register(
            "vpsie_autoscaler_scale_up_latency_seconds",
            "From a pod becoming unschedulable to the add call for it",
            m.scale_up_latency.clone(),
        );
        m
    }

    pub fn cloud_errors(&self, kind: &'static str) {
        self.cloud_errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn observe_provisioning(&self, d: std::time::Duration) {
        self.provisioning_duration.observe(d.as_secs_f64());
    }

    pub fn observe_drain(&self, d: std::time::Duration) {
        self.drain_duration.observe(d.as_secs_f64());
    }

    pub fn scale_down_result(&self, result: &'static str) {
        self.scale_downs.get_or_create(&ResultLabel { result }).inc();
    }
}
