//! vpsie-autoscaler library.
