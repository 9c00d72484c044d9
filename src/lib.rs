//! vpsie-autoscaler library.

pub mod cloud;
pub mod simnodes;
