//! vpsie-autoscaler: a Kubernetes node autoscaler and rebalancer for the VPSie cloud.

pub mod cli;
pub mod config;
pub mod controller;
pub mod crd;
pub mod lease;
pub mod metrics;
pub mod run;
pub mod scale;
pub mod server;
pub mod snapshot;
pub mod telemetry;
