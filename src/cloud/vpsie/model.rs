//! VPSie JSON → domain types, tolerant of the field-name and number-format variants seen in
//! public clients. Entries that lack what we cannot do without (an id) are skipped, not fatal.

use serde_json::Value;

use super::envelope::{field, lenient_bool, lenient_f64, lenient_string, lenient_u64, list_of};
use crate::cloud::{AddOutcome, CloudGroup, Offering, Worker, WorkerState};

/// One entry of `POST {K}/offers`.
pub fn offering(v: &Value) -> Option<Offering> {
    let id = field(v, &["id", "kubeSizeId", "KubeSizeID", "boxsize_id"], lenient_u64)?;
    let monthly = field(v, &["price", "monthly_price", "priceMonthly"], lenient_f64).unwrap_or(0.0);
    let hourly = field(v, &["hourly_price", "hourlyPrice", "price_hourly"], lenient_f64)
        .unwrap_or_else(|| Offering::hourly_from_monthly(monthly));
    Some(Offering {
        id,
        identifier: field(v, &["identifier", "uuid"], lenient_string),
        name: field(v, &["name", "nickname"], lenient_string).unwrap_or_else(|| format!("size-{id}")),
        cpu: field(v, &["cpu", "vcpu"], lenient_u64).and_then(|c| u32::try_from(c).ok()).unwrap_or(0),
        ram_mib: field(v, &["ram", "memory"], lenient_u64).unwrap_or(0),
        disk_gb: field(v, &["disk", "ssd", "storage"], lenient_u64).unwrap_or(0),
        monthly_price: monthly,
        hourly_price: hourly,
    })
}

pub fn offerings(data: &Value) -> Vec<Offering> {
    list_of(data).iter().filter_map(offering).collect()
}

/// One entry of `GET {K}/node/groups/byClusterId/{id}`.
pub fn group(v: &Value) -> Option<CloudGroup> {
    if field(v, &["is_deleted", "isDeleted"], lenient_bool) == Some(true) {
        return None;
    }
    let id = field(v, &["id", "groupId", "group_id"], lenient_u64)?;
    Some(CloudGroup {
        id,
        identifier: field(v, &["identifier"], lenient_string),
        name: field(v, &["group_name", "groupName", "name"], lenient_string).unwrap_or_default(),
        offering_id: field(v, &["boxsize_id", "KubeSizeID", "kubeSizeId"], lenient_u64),
        nodes_count: field(v, &["nodes_count", "nodesCount", "count"], lenient_u64)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(0),
    })
}

pub fn groups(data: &Value) -> Vec<CloudGroup> {
    list_of(data).iter().filter_map(group).collect()
}

/// Worker entries of `GET {K}/cluster/byId/{id}`: `nodes[]`, or the `slaves` array that one
/// client falls back to. Masters are dropped.
pub fn workers(cluster: &Value) -> Vec<Worker> {
    let nodes = ["nodes", "slaves", "workers"].iter().find_map(|k| cluster.get(*k).and_then(Value::as_array));
    nodes.map(|n| n.iter().filter_map(worker).collect()).unwrap_or_default()
}

fn worker(v: &Value) -> Option<Worker> {
    let role =
        field(v, &["node_type", "role", "type", "nodeType"], lenient_string).unwrap_or_default().to_ascii_lowercase();
    if role.contains("master") || role.contains("control") {
        return None;
    }
    let hostname = field(v, &["hostname", "name"], lenient_string)?;
    // Without a UUID we fall back to the numeric id, so delete can at least be attempted.
    let identifier = field(v, &["identifier", "uuid", "node_id", "id"], lenient_string)?;
    let state = field(v, &["status", "state"], lenient_string)
        .map(|s| WorkerState::from_api(&s))
        .unwrap_or(WorkerState::Unknown);
    Some(Worker {
        identifier,
        hostname,
        ip: field(v, &["default_ip", "ip", "publicIp", "public_ip"], lenient_string),
        private_ip: field(v, &["private_ip", "privateIp"], lenient_string),
        group_id: field(v, &["group_id", "groupId", "node_group_id", "nodeGroupId"], lenient_u64),
        state,
        created: field(v, &["created_on", "createdOn", "created_at"], lenient_string).and_then(|s| parse_time(&s)),
    })
}

/// VPSie timestamps: RFC 3339, or the SQL-ish `YYYY-MM-DD HH:MM:SS` read as UTC.
pub fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse::<jiff::Timestamp>().ok().or_else(|| {
        s.parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    })
}

/// The add-slave answer: `true`, or an object that may name the worker.
pub fn add_outcome(data: &Value) -> AddOutcome {
    match data {
        Value::Object(_) => AddOutcome {
            identifier: field(data, &["identifier", "uuid"], lenient_string),
            hostname: field(data, &["hostname"], lenient_string),
        },
        _ => AddOutcome::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn offers_parse_lenient_numbers_and_derive_hourly_from_monthly() {
        let o = offerings(&json!([
            {"id": "3", "name": "s-2", "cpu": "2", "ram": 4096, "disk": "80", "price": "36"},
            {"id": 4, "name": "s-4", "cpu": 4, "ram": 8192, "disk": 160, "price": 72, "hourly_price": "0.11"},
            {"name": "no id"}
        ]));
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].id, 3);
        assert!((o[0].hourly_price - 0.05).abs() < 1e-9);
        assert!((o[1].hourly_price - 0.11).abs() < 1e-9);
    }

    #[test]
    fn workers_drop_masters_and_read_alternative_keys() {
        let w = workers(&json!({"nodes": [
            {"id": 1, "hostname": "c-master", "node_type": "master"},
            {"identifier": "u-1", "hostname": "c-slave-0001", "default_ip": "1.1.1.1",
             "private_ip": "10.0.0.1", "groupId": "5", "status": "running",
             "created_on": "2026-01-02 03:04:05"},
            {"id": 9, "hostname": "c-slave-0002"}
        ]}));
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].group_id, Some(5));
        assert_eq!(w[0].state, WorkerState::Running);
        assert!(w[0].created.is_some());
        assert_eq!(w[1].identifier, "9");
        assert_eq!(w[1].state, WorkerState::Unknown);
    }

    #[test]
    fn deleted_groups_are_skipped() {
        let g = groups(&json!([
            {"id": 1, "group_name": "a", "is_deleted": "1"},
            {"id": "2", "group_name": "b", "boxsize_id": 3, "nodes_count": "2"}
        ]));
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].offering_id, Some(3));
        assert_eq!(g[0].nodes_count, 2);
    }

    #[test]
    fn add_answers_true_or_an_object() {
        assert_eq!(add_outcome(&json!(true)), AddOutcome::default());
        let o = add_outcome(&json!({"id": 5, "identifier": "u", "hostname": "h"}));
        assert_eq!(o.identifier.as_deref(), Some("u"));
    }
}
