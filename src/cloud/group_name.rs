//! Names of the VPSie node groups the autoscaler creates: one per (namespace, NodeGroup, plan).
//!
//! The name has to be injective, because the leak sweep decides which NodeGroup a VPSie group belongs
//! to from its name alone. The first scheme, `vas-<namespace>-<nodegroup>-<plan>`, was not: namespaces
//! and NodeGroup names both contain `-`, so `a`/`b-c` and `a-b`/`c` got the same group, and a
//! string-prefix match made NodeGroup `web` claim `web-2`'s groups.
//!
//! The scheme is `vas2-<len(namespace)>-<namespace>-<nodegroup>-<plan>`:
//! - the namespace's length (decimal, no leading zero) says exactly where the namespace ends;
//! - the plan id is all digits, so it is what follows the last `-`;
//! - the NodeGroup name is whatever lies between.
//!
//! The prefix is `vas2-` rather than `vas-` so that no old-style name can parse as a new one
//! (`vas-2-ab-web-5` is old-style for namespace `2-ab`, but would read as namespace `ab` under a `vas-`
//! prefix). Old-style groups therefore never parse, and the sweep leaves them alone.
//!
//! The reference knows no limit on VPSie group names (vpsie-api.md lists none). The longest name is
//! 5 + 2 + 1 + 63 + 1 + 253 + 1 + 20 = 346 characters; typical names stay under 40. The characters are
//! those of Kubernetes names (`a-z 0-9 - .`), plus digits.

/// What a group name encodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupName {
    pub namespace: String,
    pub nodegroup: String,
    /// The offering's numeric size id (`KubeSizeID`).
    pub plan: u64,
}

const PREFIX: &str = "vas2-";

/// Longest namespace Kubernetes accepts (a DNS label).
const MAX_NAMESPACE: usize = 63;

/// The VPSie group name for a NodeGroup's workers of one plan.
pub fn build(namespace: &str, nodegroup: &str, plan: u64) -> String {
    format!("{PREFIX}{}-{namespace}-{nodegroup}-{plan}", namespace.len())
}

/// The inverse of [`build`]: `None` for anything `build` cannot have produced from a valid namespace
/// and NodeGroup name (old-style names, other tools' groups, hand-made names).
pub fn parse(name: &str) -> Option<GroupName> {
    let rest = name.strip_prefix(PREFIX)?;
    let (len, rest) = rest.split_once('-')?;
    let len = canonical_number(len)?;
    let len = usize::try_from(len).ok().filter(|l| (1..=MAX_NAMESPACE).contains(l))?;
    let namespace = rest.get(..len)?;
    let rest = rest.get(len..)?.strip_prefix('-')?;
    let (nodegroup, plan) = rest.rsplit_once('-')?;
    let plan = canonical_number(plan)?;
    let valid = |s: &str, extra: &[u8]| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || extra.contains(&b))
    };
    if !valid(namespace, &[]) || !valid(nodegroup, b".") {
        return None;
    }
    Some(GroupName { namespace: namespace.to_string(), nodegroup: nodegroup.to_string(), plan })
}

/// Whether `name` is one of the groups of NodeGroup `namespace`/`nodegroup` (any plan).
pub fn belongs_to(name: &str, namespace: &str, nodegroup: &str) -> bool {
    parse(name).is_some_and(|g| g.namespace == namespace && g.nodegroup == nodegroup)
}

/// Decimal digits as `u64::to_string` writes them: no sign, no leading zero, no overflow.
fn canonical_number(s: &str) -> Option<u64> {
    let n: u64 = s.parse().ok().filter(|_| s.bytes().all(|b| b.is_ascii_digit()))?;
    (n.to_string() == s).then_some(n)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_old_scheme_s_collisions_get_distinct_names() {
        assert_ne!(build("a", "b-c", 1), build("a-b", "c", 1));
        assert_eq!(build("a", "b-c", 1), "vas2-1-a-b-c-1");
        assert_eq!(build("a-b", "c", 1), "vas2-3-a-b-c-1");
    }

    #[test]
    fn a_nodegroup_does_not_own_the_groups_of_a_longer_named_one() {
        let web2 = build("default", "web-2", 3);
        assert!(!belongs_to(&web2, "default", "web"));
        assert!(belongs_to(&web2, "default", "web-2"));
        assert!(belongs_to(&build("default", "web", 3), "default", "web"));
    }

    #[test]
    fn old_style_and_malformed_names_do_not_parse() {
        for name in [
            "vas-default-web-3",
            "vas-2-ab-web-5",
            "vas2-02-ab-web-5",
            "vas2-0--web-5",
            "vas2-64-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-web-5",
            "vas2-2-ab-web-05",
            "vas2-2-ab-web-",
            "vas2-2-ab--5",
            "vas2-2-ab-web",
            "vas2-2-Ab-web-5",
            "vas2-2-ab-we_b-5",
            "vas2-9-ab-web-5",
            "vas2-+2-ab-web-5",
            "vas2-2-ab-web-+5",
            "vas2-2-ab-web-18446744073709551616",
            "",
        ] {
            assert_eq!(parse(name), None, "{name}");
        }
    }

    /// Every name over a tiny alphabet, where the pairs a naive scheme confuses are dense.
    fn all_names(alphabet: &[char], max_len: usize) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut all = Vec::new();
        for _ in 0..max_len {
            out = out.iter().flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}"))).collect();
            all.extend(out.iter().filter(|n| !n.starts_with(['-', '.']) && !n.ends_with(['-', '.'])).cloned());
        }
        all
    }

    #[test]
    fn no_two_small_inputs_share_a_name() {
        let mut seen = std::collections::HashMap::new();
        for ns in all_names(&['a', '1', '-'], 3) {
            for ng in all_names(&['a', '1', '-', '.'], 4) {
                for plan in 0..3 {
                    let name = build(&ns, &ng, plan);
                    if let Some(other) = seen.insert(name.clone(), (ns.clone(), ng.clone(), plan)) {
                        panic!("{name} is the name of both {other:?} and {:?}", (ns, ng, plan));
                    }
                }
            }
        }
        assert!(seen.len() > 1000, "the enumeration is too small to mean anything: {}", seen.len());
    }

    fn namespace() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
    }

    /// Dashes and digits where they confuse naive splitting: trailing `-<digits>`, leading digits.
    fn nodegroup() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9]([a-z0-9.-]{0,40}[a-z0-9])?",
            "[a-z]{1,4}(-[0-9]{1,3}){1,3}",
            "[0-9]{1,3}(-[a-z0-9]{1,3}){0,3}",
        ]
    }

    fn plan() -> impl Strategy<Value = u64> {
        prop_oneof![0..20u64, any::<u64>()]
    }

    proptest! {
        #[test]
        fn parse_inverts_build(ns in namespace(), ng in nodegroup(), p in plan()) {
            let name = build(&ns, &ng, p);
            prop_assert_eq!(parse(&name), Some(GroupName { namespace: ns, nodegroup: ng, plan: p }));
        }

        /// The tricky pairs: one dash moved between namespace and NodeGroup, or NodeGroup names that
        /// extend each other with a `-<digits>` suffix.
        #[test]
        fn moving_a_dash_or_extending_a_name_changes_the_name(
            x in "[a-z]{1,10}", y in "[a-z]{1,10}", z in "[a-z0-9]{1,10}", n in 0..100u64, p in plan(),
        ) {
            prop_assert_ne!(build(&x, &format!("{y}-{z}"), p), build(&format!("{x}-{y}"), &z, p));
            let longer = build(&x, &format!("{y}-{n}"), p);
            prop_assert!(!belongs_to(&longer, &x, &y));
        }

        #[test]
        fn parsing_never_panics_and_only_accepts_what_build_writes(s in "\\PC{0,80}|vas2-[0-9]{1,2}-[a-z0-9.-]{0,30}") {
            if let Some(g) = parse(&s) {
                prop_assert_eq!(build(&g.namespace, &g.nodegroup, g.plan), s);
            }
        }
    }
}
