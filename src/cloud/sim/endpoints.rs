//! The JSON each VPSie endpoint answers, built from the simulator core. Field names and
//! number formats follow reference §2 (including its inconsistencies, on purpose).

use serde_json::{Map, Value, json};

use super::api::Params;
use super::catalog;
use super::config::AddShape;
use super::core::{NodeView, Sim};
use super::faults::Effects;
use super::world::SimError;

fn ok(data: Value) -> Value {
    json!({"error": false, "data": data})
}

fn ok_list(items: Vec<Value>) -> Value {
    let total = items.len();
    json!({"error": false, "data": items, "total": total})
}

fn sql_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

pub(super) fn operation(
    sim: &Sim,
    endpoint: &str,
    p: &Params,
    args: &Map<String, Value>,
    fx: &Effects,
) -> Result<Value, SimError> {
    let cluster = p.cluster.as_deref().unwrap_or_default();
    let arg_u64 = |k: &str| args.get(k).and_then(crate::cloud::vpsie::envelope::lenient_u64);
    let arg_str = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or_default();
    match endpoint {
        "datacenters" => Ok(ok_list(
            catalog::DATACENTERS
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    json!({"identifier": d.identifier, "dc_name": d.dc_name, "dc_image": "",
                       "state": "active", "country": d.country, "is_active": 1,
                       "default_selected": u8::from(i == 0), "is_deleted": 0,
                       "is_fip_available": 1, "is_bucket_available": 0, "is_private": 0})
                })
                .collect(),
        )),
        "plan_categories" => Ok(ok_list(
            catalog::CATEGORIES.iter().map(|c| json!({"identifier": c.identifier, "name": c.name})).collect(),
        )),
        "resources" => {
            sim.offers(arg_str("dcIdentifier"))?;
            let cat = arg_str("planCatIdentifier");
            Ok(ok_list(
                catalog::PLANS
                    .iter()
                    .filter(|p| cat.is_empty() || cat == "query" || p.category == cat)
                    // `id` (the size id node groups are created with) is our inference, not in the
                    // reference's field list: without it no group could be created from a plan.
                    .map(|p| {
                        json!({"id": p.id, "identifier": p.identifier, "nickname": p.nickname, "cpu": p.cpu,
                           "ram": p.ram_mb, "ssd": p.ssd_gb, "traffic": p.traffic_gb,
                           "price": p.price_monthly})
                    })
                    .collect(),
            ))
        }
        // Prices as strings here on purpose: the real catalogue mixes number formats.
        "offers" => Ok(ok_list(
            sim.offers(arg_str("dcIdentifier"))?
                .iter()
                .map(|p| {
                    json!({"id": p.id, "identifier": p.identifier, "name": p.nickname,
                       "cpu": p.cpu, "ram": p.ram_mb,
                       "disk": p.ssd_gb, "price": format!("{:.2}", p.price_monthly as f64)})
                })
                .collect(),
        )),
        "projects" => Ok(ok(json!({"rows": [{"id": 1, "name": "Default",
            "identifier": "5e1f0000-0000-4000-8000-000000000001", "is_default": 1}], "count": 1}))),
        "clusters" => {
            let g = sim.lock();
            let items = g
                .world
                .clusters
                .iter()
                .map(|c| {
                    let workers = g.world.listed_workers(&c.identifier).len();
                    json!({"identifier": c.identifier, "cluster_name": c.name,
                       "count": workers + c.masters.len(), "nickname": c.name,
                       "managerCount": c.masters.len(), "slaveCount": workers,
                       "kube_version": "1.34.1", "dcIdentifier": c.datacenter,
                       "created_on": sql_time(g.world.wall(c.created))})
                })
                .collect();
            Ok(ok_list(items))
        }
        "cluster" => {
            let nodes = sim.nodes(cluster, fx)?;
            let g = sim.lock();
            let ci = g.world.cluster_index(cluster).ok_or_else(SimError::no_cluster)?;
            let c = &g.world.clusters[ci];
            let mut list: Vec<Value> = c
                .masters
                .iter()
                .map(|m| {
                    json!({"id": m.id, "identifier": m.identifier, "hostname": m.hostname,
                       "default_ip": m.ip, "private_ip": m.private_ip, "node_type": "master",
                       "status": "joined", "created_on": sql_time(g.world.wall(c.created))})
                })
                .collect();
            list.extend(nodes.iter().map(|n| node_json(n, g.world.wall(n.rec.created))));
            Ok(ok(json!({"identifier": c.identifier, "cluster_name": c.name,
                "dcIdentifier": c.datacenter, "kube_version": "1.34.1", "nodes": list})))
        }
        "groups" => {
            let (c, rows) = sim.groups(cluster)?;
            let wall = |t| sql_time(sim.lock().world.wall(t));
            let items = rows
                .iter()
                .map(|(gr, count)| {
                    let p = catalog::plan_by_id(gr.plan);
                    json!({"id": gr.id, "identifier": gr.identifier, "group_name": gr.name,
                       "boxsize_id": gr.plan, "dcIdentifier": c.datacenter,
                       "cpu": p.map(|p| p.cpu), "ram": p.map(|p| p.ram_mb),
                       "ssd": p.map(|p| p.ssd_gb), "traffic": p.map(|p| p.traffic_gb),
                       "nodes_count": count, "cluster_id": c.id, "project_id": 1,
                       "is_active": 1, "is_deleted": 0, "notes": "",
                       "created_on": wall(gr.created), "dropped_on": null})
                })
                .collect();
            Ok(ok_list(items))
        }
        "add_group" => {
            let plan = arg_u64("KubeSizeID")
                .or_else(|| arg_u64("kubeSizeId"))
                .ok_or_else(|| SimError::new(400, "KubeSizeID is required"))?;
            sim.add_group(arg_str("clusterIdentifier"), arg_str("groupName"), plan, fx)?;
            Ok(ok(json!(true)))
        }
        "delete_group" => {
            sim.delete_group(p.group.unwrap_or_default())?;
            Ok(ok(json!(true)))
        }
        "add_worker" | "add_worker_default" => {
            let group = p.group.or_else(|| arg_u64("groupId"));
            let reply = sim.add_worker(cluster, group, fx)?;
            if let Some(e) = reply.answer_error {
                return Err(e);
            }
            let r = &reply.rec;
            Ok(ok(match reply.shape {
                AddShape::True => json!(true),
                AddShape::Object => json!({"id": r.id, "identifier": r.identifier,
                    "hostname": r.hostname, "status": r.phase.api_status()}),
                AddShape::ObjectWithoutIdentifier => {
                    json!({"id": r.id, "status": r.phase.api_status()})
                }
            }))
        }
        "reduce_worker" => {
            let group = arg_u64("groupId").ok_or_else(|| SimError::new(400, "groupId is required"))?;
            sim.reduce(cluster, Some(group), fx)?;
            Ok(ok(json!(true)))
        }
        "reduce" => {
            sim.reduce(cluster, None, fx)?;
            Ok(ok(json!(true)))
        }
        "delete_worker" => {
            let id = arg_str("identifier");
            if id.is_empty() {
                return Err(SimError::new(400, "identifier is required"));
            }
            sim.delete_worker(cluster, id, fx)?;
            Ok(json!({"error": false, "code": 200, "message": "Node deletion started"}))
        }
        _ => Err(SimError::new(404, "Route not found")),
    }
}

fn node_json(n: &NodeView, created: jiff::Timestamp) -> Value {
    let r = &n.rec;
    json!({"id": r.id, "node_id": r.id, "identifier": r.identifier, "hostname": n.hostname,
       "default_ip": r.ip, "private_ip": r.private_ip, "node_type": "slave",
       "status": n.status, "group_id": r.group, "boxsize_id": r.plan,
       "created_on": sql_time(created)})
}
