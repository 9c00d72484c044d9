//! Which plans of the VPSie catalogue a NodeGroup allows, as the planners see them.

use super::OfferingInfo;
use crate::{cloud::Offering, crd::NodeGroup};

/// The group's allowed plans, named as the group names them (plan identifier, numeric id or name; all of
/// the catalogue when it names none), narrowed by its resource ranges, with their sizes and prices.
pub fn allowed_offerings(catalogue: &[Offering], group: &NodeGroup) -> Vec<OfferingInfo> {
    let info = |id: String, o: &Offering| OfferingInfo {
        id,
        cpu_millis: i64::from(o.cpu) * 1000,
        memory_bytes: (o.ram_mib as i64) * 1024 * 1024,
        hourly_price: o.hourly_price,
        disk_bytes: Some((o.disk_gb as i64) * 1_000_000_000),
    };
    let mut out = Vec::new();
    match &group.spec.offerings {
        Some(wanted) if !wanted.is_empty() => {
            for w in wanted {
                let found = catalogue.iter().find(|o| {
                    o.identifier.as_deref() == Some(w.as_str())
                        || o.id.to_string() == *w
                        || o.name.eq_ignore_ascii_case(w)
                });
                if let Some(o) = found {
                    out.push(info(w.clone(), o));
                }
            }
        }
        _ => out.extend(catalogue.iter().map(|o| info(o.id.to_string(), o))),
    }
    if let Some(r) = &group.spec.resources {
        out.retain(|o| {
            let cpu = o.cpu_millis / 1000;
            let mib = o.memory_bytes / (1024 * 1024);
            r.min_cpu.is_none_or(|m| cpu >= i64::from(m))
                && r.max_cpu.is_none_or(|m| cpu <= i64::from(m))
                && r.min_memory_mib.is_none_or(|m| mib >= m)
                && r.max_memory_mib.is_none_or(|m| mib <= m)
        });
    }
    out
}
