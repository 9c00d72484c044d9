//! What one watch event costs to parse: a KWOK node and a Running pod as the API server sends them
//! (`fixtures/`, read from the local control plane with their managed fields), parsed into the full
//! Kubernetes types and into [`Lean`] ones, as the large watches do. Prints the median, min and max time
//! per object over several rounds, and what that makes of an initial list of 30,000 pods and 1,000 nodes.
//! Run with `cargo run --release --example bench_decode`.

use std::{hint::black_box, time::Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use serde::de::DeserializeOwned;
use vpsie_autoscaler::controller::lean::Lean;

const ROUNDS: usize = 15;
const PER_ROUND: usize = 20_000;

/// Nanoseconds per object parsed: (min, median, max) over the rounds.
fn time_parse<T: DeserializeOwned>(json: &[u8]) -> (f64, f64, f64) {
    let mut per_object: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                black_box(serde_json::from_slice::<T>(black_box(json)).expect("the fixture parses"));
            }
            start.elapsed().as_nanos() as f64 / PER_ROUND as f64
        })
        .collect();
    per_object.sort_by(f64::total_cmp);
    (per_object[0], per_object[ROUNDS / 2], per_object[ROUNDS - 1])
}

fn compact(pretty: &str) -> Vec<u8> {
    let value: serde_json::Value = serde_json::from_str(pretty).expect("valid JSON");
    serde_json::to_vec(&value).unwrap()
}

fn report(what: &str, bytes: usize, (min, median, max): (f64, f64, f64), list_of: usize) {
    println!(
        "{what:<10} {bytes:>5} B  median {:>6.2} µs (min {:.2}, max {:.2})  {list_of} of them: {:.0} ms",
        median / 1000.0,
        min / 1000.0,
        max / 1000.0,
        median * list_of as f64 / 1e6
    );
}

fn main() {
    let pod = compact(include_str!("fixtures/kwok-pod.json"));
    let node = compact(include_str!("fixtures/kwok-node.json"));
    println!("parse one object, {ROUNDS} rounds of {PER_ROUND}, single thread");
    report("Pod", pod.len(), time_parse::<Pod>(&pod), 30_000);
    report("Lean<Pod>", pod.len(), time_parse::<Lean<Pod>>(&pod), 30_000);
    report("Node", node.len(), time_parse::<Node>(&node), 1_000);
    report("Lean<Node>", node.len(), time_parse::<Lean<Node>>(&node), 1_000);
}
