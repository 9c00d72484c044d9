//! vpsie-autoscaler: a Kubernetes node autoscaler and rebalancer for the VPSie cloud.

pub mod cli;
pub mod cloud;
pub mod cloud_setup;
pub mod config;
pub mod controller;
pub mod crd;
pub mod diagnose;
pub mod drain;
pub mod kube_requests;
pub mod lease;
pub mod metrics;
pub mod rebalance;
pub mod run;
pub mod scale;
pub mod server;
pub mod simnodes;
pub mod snapshot;
pub mod telemetry;
