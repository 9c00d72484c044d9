//! The rebalancer: replaces nodes with better-priced ones, make-before-break, and rolls back by itself.
//!
//! [`analysis`] is the pure first step: from the same snapshot the scale planners read, which nodes would
//! run their pods on a cheaper offering their group allows, and why each other node is not a candidate.
//! `vpsie-autoscaler plan` prints it for a live cluster. [`window`] decides whether a group's maintenance
//! windows let an operation start now, and since when. [`preflight`] checks a requested operation before
//! it touches anything, and [`execute`] is the step machine the Rebalance controller drives.

pub mod analysis;
pub mod execute;
pub mod plan;
pub mod preflight;
pub mod propose;
pub mod window;

#[cfg(test)]
mod execute_tests;
#[cfg(test)]
mod preflight_tests;
#[cfg(test)]
mod tests;

pub use analysis::{Analysis, Candidate, GroupSettings, Input, Skip, SkippedNode, Worker, analyse};
