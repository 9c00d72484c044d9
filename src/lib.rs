//! vpsie-autoscaler: a Kubernetes node autoscaler and rebalancer for the VPSie cloud.

pub mod crd;
pub mod config;
pub mod lease;
pub mod metrics;
pub mod server;
pub mod cli;
pub mod controller;
pub mod run;
pub mod telemetry;
