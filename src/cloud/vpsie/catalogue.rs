//! The offerings catalogue: `POST {K}/offers`, falling back to the plan list `POST /apps/v2/resources`.
//!
//! Reference §2.1: `/k8s/offers` is the one catalogue endpoint that no VPSie-maintained client uses [X];
//! `/apps/v2/resources` is confirmed [C]: a form-encoded request, monthly prices. The client falls back to
//! the plan list when the offers endpoint looks absent (404, 405) or answers something we cannot read
//! (no envelope, no JSON, no offer with a size id). Retryable trouble (429, 5xx, transport, our own
//! breaker) is no reason to fall back: the endpoint exists and will answer later.
//!
//! Two points about the plan list are not confirmed anywhere:
//! - its rows must carry a numeric size id (`id`) for node groups to be created from them; rows without
//!   one are skipped, and a list that is all such rows is an error;
//! - which `osIdentifier` and `planCatIdentifier` it needs. We send both empty, meaning "any".

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use reqwest::Method;
use serde_json::{Value, json};

use super::VpsieClient;
use super::envelope::{Envelope, list_of};
use super::model;
use super::transport::{Body, Call};
use crate::cloud::{CloudError, Offering};

/// What to do with the offers endpoint's answer.
#[derive(Debug, PartialEq)]
enum Verdict {
    Use(Vec<Offering>),
    /// Ask the plan list instead; the reason is bounded (it goes into a log line).
    FallBack(&'static str),
    Fail(CloudError),
}

fn offers_verdict(answer: Result<Envelope, CloudError>) -> Verdict {
    match answer {
        Ok(env) => match model::offerings(&env.data) {
            list if list.is_empty() => Verdict::FallBack("the answer holds no offer with a size id"),
            list => Verdict::Use(list),
        },
        Err(CloudError::NotFound { .. }) => Verdict::FallBack("the endpoint answered not found"),
        Err(CloudError::Permanent { status: Some(405), .. }) => Verdict::FallBack("the endpoint refused the method"),
        // A 2xx whose body is not JSON: nothing to read, and the call changes nothing.
        Err(CloudError::Transient { status: Some(200..=299), .. }) => Verdict::FallBack("the answer is not JSON"),
        Err(e) => Verdict::Fail(e),
    }
}

/// Offerings from the plan list's `data`.
fn plans(data: &Value) -> Result<Vec<Offering>, CloudError> {
    let rows = list_of(data);
    let offerings = model::offerings(data);
    if offerings.is_empty() && !rows.is_empty() {
        return Err(CloudError::permanent(
            "the plan list (/apps/v2/resources) gives no numeric size id, so no node group can be created from it",
        ));
    }
    Ok(offerings)
}

/// The plan list's form: the fields govpsie sends, with the placeholder `query` it uses for the free-text
/// ones, and empty OS and category filters.
fn resources_form(datacenter: &str) -> Vec<(&'static str, String)> {
    vec![
        ("dcIdentifier", datacenter.to_string()),
        ("osIdentifier", String::new()),
        ("planCatIdentifier", String::new()),
        ("name", "query".into()),
        ("description", "query".into()),
        ("isCustom", "0".into()),
    ]
}

/// Counts the catalogue fallbacks; cheap to clone (an `Arc` inside).
#[derive(Clone, Debug, Default)]
pub(super) struct CatalogueMetrics {
    fallbacks: Counter,
}

impl VpsieClient {
    /// Registers `vpsie_autoscaler_offerings_fallback_total` into `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "vpsie_autoscaler_offerings_fallback",
            "Offerings read from the plan list (/apps/v2/resources) because /apps/v2/k8s/offers was unusable",
            self.catalogue_metrics.fallbacks.clone(),
        );
    }

    pub(super) async fn catalogue(&self, datacenter: &str) -> Result<Vec<Offering>, CloudError> {
        let offers = self
            .call(Call {
                method: Method::POST,
                path: self.k8s("/offers"),
                body: Body::Json(json!({ "dcIdentifier": datacenter })),
                idempotent: true,
            })
            .await;
        let reason = match offers_verdict(offers) {
            Verdict::Use(list) => return Ok(list),
            Verdict::Fail(e) => return Err(e),
            Verdict::FallBack(reason) => reason,
        };
        self.catalogue_metrics.fallbacks.inc();
        tracing::warn!(
            reason,
            datacenter,
            offers = %self.k8s("/offers"),
            plans = %self.cfg.resources_path,
            "the offers endpoint is unusable; reading the plan list instead"
        );
        let env = self
            .call(Call {
                method: Method::POST,
                path: self.cfg.resources_path.clone(),
                body: Body::Form(resources_form(datacenter)),
                idempotent: true,
            })
            .await?;
        plans(&env.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(data: Value) -> Result<Envelope, CloudError> {
        Ok(Envelope { data, total: None })
    }

    #[test]
    fn usable_offers_are_used() {
        let v = offers_verdict(env(json!([{"id": 2, "name": "s-2", "price": 24}])));
        assert!(matches!(v, Verdict::Use(ref l) if l.len() == 1 && l[0].id == 2), "{v:?}");
    }

    #[test]
    fn an_absent_endpoint_or_unreadable_answer_falls_back() {
        let err = |status: u16| super::super::envelope::parse_response(status, b"<html>nope</html>", None);
        for answer in [
            err(404),
            err(405),
            err(200),
            super::super::envelope::parse_response(404, br#"{"error":true,"message":"Route not found"}"#, None),
            env(json!({"unexpected": "shape"})),
            env(json!(true)),
            env(json!([{"name": "no size id"}])),
            env(json!([])),
        ] {
            let v = offers_verdict(answer.clone());
            assert!(matches!(v, Verdict::FallBack(_)), "{answer:?} gave {v:?}");
        }
    }

    #[test]
    fn retryable_trouble_and_refusals_do_not_fall_back() {
        for e in [
            CloudError::RateLimited { retry_after: None },
            CloudError::Transient { status: Some(503), message: String::new() },
            CloudError::Transient { status: None, message: String::new() },
            CloudError::CircuitOpen { retry_after: std::time::Duration::from_secs(1) },
            CloudError::Unauthorized { message: String::new() },
            CloudError::Permanent { status: Some(400), message: String::new() },
        ] {
            assert_eq!(offers_verdict(Err(e.clone())), Verdict::Fail(e));
        }
    }

    #[test]
    fn plan_rows_become_offerings_priced_by_the_month() {
        let o = plans(&json!([
            {"id": 5, "identifier": "u-5", "nickname": "c-2vcpu-4gb", "cpu": 2, "ram": 4096, "ssd": 50,
             "traffic": 2000, "price": 30}
        ]))
        .expect("plans");
        assert_eq!((o[0].id, o[0].name.as_str(), o[0].disk_gb, o[0].ram_mib), (5, "c-2vcpu-4gb", 50, 4096));
        assert!((o[0].hourly_price - 30.0 / 720.0).abs() < 1e-12);
    }

    #[test]
    fn plan_rows_without_a_size_id_are_an_error_not_an_empty_catalogue() {
        let e = plans(&json!([{"identifier": "u-5", "nickname": "c-2vcpu-4gb", "price": 30}]));
        assert!(matches!(e, Err(CloudError::Permanent { .. })), "{e:?}");
        assert_eq!(plans(&json!([])), Ok(vec![]));
    }
}
