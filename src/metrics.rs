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
    pub leader: LeaderMetrics,
    pub rebalancer: RebalancerMetrics,
}

impl Metrics {
    /// Creates and registers every metric; the registry then goes to the HTTP server.
    pub fn register(registry: &mut Registry) -> Self {
        Self {
            controller: ControllerMetrics::register(registry),
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
}

impl ControllerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 14))),
            watches_synced: Gauge::default(),
        };
        registry.register(
            "vpsie_autoscaler_reconcile",
            "Reconciliations by controller and result",
            m.reconciles.clone(),
        );
        registry.register(
            "vpsie_autoscaler_reconcile_errors",
            "Failed reconciliations by controller and error kind",
            m.errors.clone(),
        );
        registry.register(
            "vpsie_autoscaler_reconcile_duration_seconds",
            "Time spent in one reconciliation",
            m.duration.clone(),
        );
        registry.register("vpsie_autoscaler_watches_synced", "1 once every watch has synced", m.watches_synced.clone());
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
}

impl RebalancerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m =
            Self { operations: Family::default(), in_progress: Gauge::default(), nodes_replaced: Counter::default() };
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
        m
    }
}
