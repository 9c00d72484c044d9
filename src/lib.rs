//! vpsie-autoscaler library.

pub mod cloud;
