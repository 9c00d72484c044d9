//! The simulator's fixed catalogue: datacenters, plan categories and plans.
//!
//! Prices are monthly USD. Three "cheaper equivalent" pairs (same cpu/ram, different
//! category and price) exist so the rebalancer has something to find:
//! c-2vcpu-4gb → s-2vcpu-4gb, c-4vcpu-8gb → s-4vcpu-8gb, c-8vcpu-16gb → s-8vcpu-16gb.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Datacenter {
    pub identifier: &'static str,
    pub dc_name: &'static str,
    pub country: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Category {
    pub identifier: &'static str,
    pub name: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Kube size id (what node groups are created with).
    pub id: u64,
    pub identifier: &'static str,
    pub nickname: &'static str,
    pub category: &'static str,
    pub cpu: u32,
    pub ram_mb: u64,
    pub ssd_gb: u64,
    pub traffic_gb: u64,
    pub price_monthly: u64,
}

pub const DATACENTERS: &[Datacenter] = &[
    Datacenter { identifier: "3c0e2d1a-5b7f-11ee-8c99-0242ac120001", dc_name: "Helsinki", country: "FI" },
    Datacenter { identifier: "3c0e2d1a-5b7f-11ee-8c99-0242ac120002", dc_name: "Toronto", country: "CA" },
    Datacenter { identifier: "3c0e2d1a-5b7f-11ee-8c99-0242ac120003", dc_name: "Frankfurt", country: "DE" },
];

pub const CATEGORIES: &[Category] = &[
    Category { identifier: "7a3f0b42-5b80-11ee-8c99-0242ac120001", name: "Shared CPU" },
    Category { identifier: "7a3f0b42-5b80-11ee-8c99-0242ac120002", name: "Compute Optimized" },
];

const SHARED: &str = "7a3f0b42-5b80-11ee-8c99-0242ac120001";
const COMPUTE: &str = "7a3f0b42-5b80-11ee-8c99-0242ac120002";

const fn plan(
    id: u64,
    identifier: &'static str,
    nickname: &'static str,
    category: &'static str,
    size: (u32, u64, u64),
    price_monthly: u64,
) -> Plan {
    Plan {
        id,
        identifier,
        nickname,
        category,
        cpu: size.0,
        ram_mb: size.1,
        ssd_gb: size.2,
        traffic_gb: 1000 * size.0 as u64,
        price_monthly,
    }
}

pub const PLANS: &[Plan] = &[
    plan(1, "b1a0c3d4-0001-4e5f-8a9b-000000000001", "s-1vcpu-2gb", SHARED, (1, 2048, 40), 12),
    plan(2, "b1a0c3d4-0002-4e5f-8a9b-000000000002", "s-2vcpu-4gb", SHARED, (2, 4096, 80), 24),
    plan(3, "b1a0c3d4-0003-4e5f-8a9b-000000000003", "s-4vcpu-8gb", SHARED, (4, 8192, 160), 48),
    plan(4, "b1a0c3d4-0004-4e5f-8a9b-000000000004", "s-8vcpu-16gb", SHARED, (8, 16384, 320), 96),
    plan(5, "b1a0c3d4-0005-4e5f-8a9b-000000000005", "c-2vcpu-4gb", COMPUTE, (2, 4096, 50), 30),
    plan(6, "b1a0c3d4-0006-4e5f-8a9b-000000000006", "c-4vcpu-8gb", COMPUTE, (4, 8192, 100), 60),
    plan(7, "b1a0c3d4-0007-4e5f-8a9b-000000000007", "c-8vcpu-16gb", COMPUTE, (8, 16384, 200), 110),
    plan(8, "b1a0c3d4-0008-4e5f-8a9b-000000000008", "c-16vcpu-32gb", COMPUTE, (16, 32768, 400), 220),
];

pub fn plan_by_id(id: u64) -> Option<&'static Plan> {
    PLANS.iter().find(|p| p.id == id)
}

pub fn datacenter(identifier: &str) -> Option<&'static Datacenter> {
    DATACENTERS.iter().find(|d| d.identifier == identifier || d.dc_name.eq_ignore_ascii_case(identifier))
}

impl Plan {
    pub fn hourly(&self) -> f64 {
        self.price_monthly as f64 / crate::cloud::HOURS_PER_MONTH
    }

    pub fn offering(&self) -> crate::cloud::Offering {
        crate::cloud::Offering {
            id: self.id,
            identifier: Some(self.identifier.to_string()),
            name: self.nickname.to_string(),
            cpu: self.cpu,
            ram_mib: self.ram_mb,
            disk_gb: self.ssd_gb,
            monthly_price: self.price_monthly as f64,
            hourly_price: self.hourly(),
        }
    }
}
