//! The well-known labels a worker's Node carries: the planner promises them to pods on a node that does
//! not exist yet, and the controller puts them on the Node when it joins. One function serves both, so the
//! promise and the Node cannot drift apart.
//!
//! VPSie's cloud controller implements neither `InstancesV2` nor `Zones`, so nothing else sets the topology
//! and instance-type labels. A VPSie datacenter is one site with no smaller failure domain inside it and
//! no region above it, so both region and zone are the datacenter identifier (`spec.datacenter`).

use std::collections::BTreeMap;

pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
pub const OS_LABEL: &str = "kubernetes.io/os";

/// Labels of a worker in `datacenter` on `offering` (as the group names the plan). A value Kubernetes
/// would reject as a label value is left out: the Node patch carrying it would fail as a whole, and the
/// planner must not promise a label the Node will not get.
pub fn well_known_labels(datacenter: &str, offering: &str) -> BTreeMap<String, String> {
    [
        (REGION_LABEL, datacenter),
        (ZONE_LABEL, datacenter),
        (INSTANCE_TYPE_LABEL, offering),
        // VPSie sells x86-64 Linux workers only; the kubelet sets the same two.
        (ARCH_LABEL, "amd64"),
        (OS_LABEL, "linux"),
    ]
    .into_iter()
    .filter(|(_, value)| is_label_value(value))
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

/// A non-empty valid label value: at most 63 characters, alphanumeric at both ends, `-`, `_`, `.` inside.
fn is_label_value(value: &str) -> bool {
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
        && value.chars().all(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_and_zone_are_the_datacenter_and_instance_type_is_the_offering() {
        let labels = well_known_labels("3c0e2d1a-5b7f-11ee-8c99-0242ac120001", "s-2vcpu-4gb");
        let get = |k| labels.get(k).map(String::as_str);
        assert_eq!(get(REGION_LABEL), Some("3c0e2d1a-5b7f-11ee-8c99-0242ac120001"));
        assert_eq!(get(ZONE_LABEL), Some("3c0e2d1a-5b7f-11ee-8c99-0242ac120001"));
        assert_eq!(get(INSTANCE_TYPE_LABEL), Some("s-2vcpu-4gb"));
        assert_eq!(get(ARCH_LABEL), Some("amd64"));
        assert_eq!(get(OS_LABEL), Some("linux"));
    }

    #[test]
    fn values_kubernetes_would_reject_are_left_out() {
        for bad in ["", "Standard 2 vCPU", "-dc", "dc-", &"a".repeat(64)] {
            let labels = well_known_labels(bad, bad);
            assert_eq!(labels.keys().collect::<Vec<_>>(), vec![ARCH_LABEL, OS_LABEL], "{bad:?}");
        }
        assert!(well_known_labels(&"a".repeat(63), "2").contains_key(ZONE_LABEL));
    }
}
