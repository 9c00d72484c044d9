//! The `CloudProvider` contract, run against (a) the in-process simulator, (b) the HTTP
//! client over loopback to the simulator, and (c) the metered wrapper around (b).
//! Every behaviour is one async fn taking the implementation kind.

mod cloud_common;

use std::time::{Duration, Instant};

use cloud_common::{Harness, Kind, TIMEOUT, eventually};
use serde_json::json;
use vpsie_autoscaler::cloud::{
    AddOutcome, CloudError, NewWorker, WorkerQuery, WorkerState, deleted_or_gone, find_new_worker,
};

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod in_process_simulator {
            $( #[tokio::test] async fn $name() { super::$name(super::Kind::InProc).await } )*
        }
        mod http_client_over_loopback {
            $( #[tokio::test] async fn $name() { super::$name(super::Kind::Http).await } )*
        }
        mod metered_http_client {
            $( #[tokio::test] async fn $name() { super::$name(super::Kind::Metered).await } )*
        }
    };
}

contract!(
    offerings_list_the_catalogue_with_hourly_equal_to_monthly_over_720,
    offerings_for_an_unknown_datacenter_are_not_found,
    ensure_group_creates_a_missing_group_once_and_then_reuses_it,
    ensure_group_refuses_a_same_named_group_of_another_size,
    a_group_create_whose_answer_is_lost_is_found_by_listing,
    an_added_worker_is_found_by_diffing_and_becomes_ready,
    listings_exclude_masters_and_filter_by_group_hostname_and_ip,
    an_unknown_worker_or_cluster_is_not_found,
    delete_is_idempotent_and_answers_not_found_once_gone,
    injected_http_errors_classify_the_same_whatever_the_body_style,
    rate_limits_report_retry_after_in_seconds_or_as_a_date_or_not_at_all,
    garbage_truncated_and_huge_answers_are_transient_errors_never_a_success,
    latency_within_the_timeout_is_tolerated,
    a_hung_add_times_out_as_transient_and_creates_nothing,
    a_dropped_connection_is_transient_and_creates_nothing,
    an_async_create_failure_shows_failed_then_vanishes,
    an_immediate_create_failure_creates_nothing,
    a_stuck_worker_stays_provisioning,
    a_worker_that_never_joins_stays_running,
    slow_creates_take_longer_than_normal_ones,
    quota_refusals_are_quota_exceeded_and_create_nothing,
    delete_failures_leave_the_worker_and_a_later_delete_succeeds,
    a_delete_answered_not_found_still_removes_the_worker,
    a_timed_out_add_is_never_retried_and_creates_exactly_one_worker,
    a_rate_limited_add_is_refused_before_acting_and_creates_nothing,
    revoked_and_expired_tokens_are_replaced_transparently,
    a_partition_fails_calls_until_it_heals,
    api_hostname_casing_does_not_break_discovery,
    the_add_answer_shape_is_honoured,
    the_cost_meter_accrues_monthly_over_720_per_hour,
    list_lag_hides_new_workers_for_a_while,
    a_fault_with_probability_zero_never_fires,
);

const DC: &str = "3c0e2d1a-5b7f-11ee-8c99-0242ac120001";

async fn offerings_list_the_catalogue_with_hourly_equal_to_monthly_over_720(kind: Kind) {
    let h = Harness::new(kind).await;
    let offers = h.cloud.offerings(DC).await.expect("offerings");
    assert!(offers.len() >= 6);
    for o in &offers {
        assert!(o.monthly_price > 0.0 && o.cpu > 0 && o.ram_mib > 0);
        assert!((o.hourly_price - o.monthly_price / 720.0).abs() < 1e-9);
    }
    assert_eq!(offers[1], h.offering(2), "same view in every implementation");
}

async fn offerings_for_an_unknown_datacenter_are_not_found(kind: Kind) {
    let h = Harness::new(kind).await;
    let e = h.cloud.offerings("no-such-dc").await;
    assert!(matches!(e, Err(CloudError::NotFound { .. })), "{e:?}");
}

async fn ensure_group_creates_a_missing_group_once_and_then_reuses_it(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = h.group("pool-s2", 2).await;
    let b = h.group("pool-s2", 2).await;
    assert_eq!(a.id, b.id);
    assert_eq!(a.offering_id, Some(2));
    let creates = h.sim.requests().iter().filter(|r| r.endpoint == "add_group").count();
    assert_eq!(creates, 1);
    let groups = h.cloud.groups(&h.cluster).await.expect("groups");
    assert_eq!(groups.iter().filter(|g| g.name == "pool-s2").count(), 1);
}

async fn ensure_group_refuses_a_same_named_group_of_another_size(kind: Kind) {
    let h = Harness::new(kind).await;
    h.group("pool", 2).await;
    let e = h.cloud.ensure_group(&h.cluster, &h.offering(3), "pool").await;
    assert!(matches!(e, Err(CloudError::Permanent { .. })), "{e:?}");
}

async fn a_group_create_whose_answer_is_lost_is_found_by_listing(kind: Kind) {
    let h = Harness::new(kind).await;
    h.fault(json!({"endpoint": "add_group", "fault": {"kind": "duplicate_create_on_retry"}}));
    let g = h.group("pool", 2).await;
    assert_eq!(g.offering_id, Some(2));
    let creates = h.sim.requests().iter().filter(|r| r.endpoint == "add_group").count();
    assert_eq!(creates, 1, "the create is not repeated");
}

async fn an_added_worker_is_found_by_diffing_and_becomes_ready(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    let w = h.add_and_discover(g.id).await;
    assert!(w.hostname.starts_with("sim-k8s-1a2b-slave-"));
    assert_eq!(w.group_id, Some(g.id));
    let ready = eventually("the worker is ready", Duration::from_secs(5), || async {
        let cur = h.cloud.get_worker(&h.cluster, &w.identifier).await.ok()?;
        (cur.state == WorkerState::Ready).then_some(cur)
    })
    .await;
    assert!(ready.ip.is_some() && ready.private_ip.is_some() && ready.created.is_some());
    let listed = h.cloud.list_workers(&h.cluster, g.id).await.expect("list");
    assert_eq!(listed.len(), 1);
    let groups = h.cloud.groups(&h.cluster).await.expect("groups");
    assert_eq!(groups.iter().find(|x| x.id == g.id).map(|x| x.nodes_count), Some(1));
}

async fn listings_exclude_masters_and_filter_by_group_hostname_and_ip(kind: Kind) {
    let h = Harness::new(kind).await;
    let g1 = h.group("a", 2).await;
    let g2 = h.group("b", 5).await;
    let w1 = h.add_and_discover(g1.id).await;
    let w2 = h.add_and_discover(g2.id).await;
    let all = h.workers().await;
    assert_eq!(all.len(), 2, "masters are not workers: {all:?}");
    let only1 = h.cloud.list_workers(&h.cluster, g1.id).await.expect("list");
    assert_eq!(only1.iter().map(|w| &w.identifier).collect::<Vec<_>>(), vec![&w1.identifier]);
    let by_host =
        h.cloud.find_workers(&h.cluster, &WorkerQuery::hostname(w2.hostname.to_uppercase())).await.expect("find");
    assert_eq!(by_host.len(), 1);
    let by_ip = WorkerQuery { ip: w2.private_ip.clone(), ..WorkerQuery::default() };
    let found = h.cloud.find_workers(&h.cluster, &by_ip).await.expect("find");
    assert_eq!(found.first().map(|w| &w.identifier), Some(&w2.identifier));
}

async fn an_unknown_worker_or_cluster_is_not_found(kind: Kind) {
    let h = Harness::new(kind).await;
    let e = h.cloud.get_worker(&h.cluster, "no-such-worker").await;
    assert!(matches!(e, Err(CloudError::NotFound { .. })), "{e:?}");
    let e = h.cloud.groups("no-such-cluster").await;
    assert!(matches!(e, Err(CloudError::NotFound { .. })), "{e:?}");
    let e = h.cloud.add_worker(&h.cluster, 999_999).await;
    assert!(matches!(e, Err(CloudError::NotFound { .. })), "{e:?}");
}

async fn delete_is_idempotent_and_answers_not_found_once_gone(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    let w = h.add_and_discover(g.id).await;
    h.cloud.delete_worker(&h.cluster, &w.identifier).await.expect("delete accepted");
    // A repeat while it is still deleting is accepted again (or already gone).
    deleted_or_gone(h.cloud.delete_worker(&h.cluster, &w.identifier).await).expect("repeat");
    h.wait_gone(&w.identifier).await;
    let e = h.cloud.delete_worker(&h.cluster, &w.identifier).await;
    assert!(matches!(e, Err(CloudError::NotFound { .. })), "{e:?}");
    assert!(deleted_or_gone(e).is_ok());
}

async fn injected_http_errors_classify_the_same_whatever_the_body_style(kind: Kind) {
    let h = Harness::new(kind).await;
    let cases = [
        (503, "enveloped", "transient"),
        (503, "html", "transient"),
        (502, "empty", "transient"),
        (504, "error200", "transient"),
        (500, "empty", "transient"),
        (400, "enveloped", "permanent"),
        (409, "html", "permanent"),
        (422, "error200", "permanent"),
        (404, "enveloped", "not_found"),
        (401, "enveloped", "unauthorized"),
        (403, "empty", "unauthorized"),
        (200, "error200", "permanent"),
    ];
    for (status, style, kind_name) in cases {
        let rule = h.fault(json!({"endpoint": "groups",
            "fault": {"kind": "http_error", "status": status, "body_style": style}}));
        let e = h.cloud.groups(&h.cluster).await;
        assert_eq!(e.as_ref().err().map(CloudError::kind), Some(kind_name), "{status} {style}: {e:?}");
        h.sim.remove_fault(rule.id);
        h.settle_breaker().await;
    }
    assert!(h.cloud.groups(&h.cluster).await.is_ok(), "healthy again");
}

async fn garbage_truncated_and_huge_answers_are_transient_errors_never_a_success(kind: Kind) {
    let h = Harness::new(kind).await;
    // Each answered with HTTP 200, where a careless client would take the body for a (partial) success.
    for style in ["garbage", "truncated", "huge", "html"] {
        // On every attempt: a body too large to read is retried in line (the GET is idempotent).
        let rule = h.fault(json!({"endpoint": "cluster",
            "fault": {"kind": "http_error", "status": 200, "body_style": style}}));
        match h.workers_or_err().await {
            Err(CloudError::Transient { message, .. }) => {
                let named = ["non-JSON", "truncated", "too large"].iter().any(|m| message.contains(m));
                assert!(named, "{style}: the message says what was wrong with the answer: {message}");
            }
            other => panic!("{style}: expected a transient error, got {other:?}"),
        }
        h.sim.remove_fault(rule.id);
        h.settle_breaker().await;
    }
    assert!(h.workers_or_err().await.is_ok(), "healthy again");
}

async fn rate_limits_report_retry_after_in_seconds_or_as_a_date_or_not_at_all(kind: Kind) {
    let h = Harness::new(kind).await;
    let cases = [
        (json!({"style": "seconds", "secs": 5}), Some(5)),
        (json!({"style": "http_date", "secs": 5}), Some(5)),
        (json!({"style": "none"}), None),
    ];
    for (ra, expect) in cases {
        let rule = h.fault(json!({"endpoint": "cluster",
            "fault": {"kind": "rate_limit", "retry_after": ra}}));
        match h.workers_or_err().await {
            Err(CloudError::RateLimited { retry_after }) => match expect {
                // A date has one-second resolution.
                Some(s) => {
                    let got = retry_after.map(|d| d.as_secs_f64()).unwrap_or(-1.0);
                    assert!((s as f64 - 1.5..=s as f64).contains(&got), "{got}");
                }
                None => assert_eq!(retry_after, None),
            },
            other => panic!("expected rate limited, got {other:?}"),
        }
        h.sim.remove_fault(rule.id);
        h.settle_breaker().await;
    }
}

async fn latency_within_the_timeout_is_tolerated(kind: Kind) {
    let h = Harness::new(kind).await;
    h.fault(json!({"endpoint": "cluster", "fault": {"kind": "latency", "ms": 200}}));
    let start = Instant::now();
    h.workers().await;
    assert!(start.elapsed() >= Duration::from_millis(200));
}

async fn a_hung_add_times_out_as_transient_and_creates_nothing(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    h.fault(json!({"endpoint": "add_worker", "fault": {"kind": "hang", "ms": 60000}}));
    let start = Instant::now();
    let e = h.cloud.add_worker(&h.cluster, g.id).await;
    // No status: the caller's own timeout ended the call. The simulator answers a hang with a 504, a minute on.
    assert!(matches!(e, Err(CloudError::Transient { status: None, .. })), "{e:?}");
    assert!(start.elapsed() >= TIMEOUT, "gave up before the timeout: {:?}", start.elapsed());
    assert_eq!(h.workers_ever(), 0);
    assert_eq!(h.add_requests(), 1, "an add is never retried");
}

async fn a_dropped_connection_is_transient_and_creates_nothing(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    h.fault(json!({"endpoint": "add_worker", "fault": {"kind": "drop_connection"}}));
    let e = h.cloud.add_worker(&h.cluster, g.id).await;
    assert!(matches!(e, Err(CloudError::Transient { status: None, .. })), "{e:?}");
    assert_eq!(h.workers_ever(), 0);
    assert_eq!(h.add_requests(), 1);
}

async fn an_async_create_failure_shows_failed_then_vanishes(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    h.fault(json!({"endpoint": "add_worker", "times": 1, "fault": {"kind": "fail_create"}}));
    let w = h.add_and_discover(g.id).await;
    eventually("the worker fails", Duration::from_secs(5), || async {
        let cur = h.cloud.get_worker(&h.cluster, &w.identifier).await.ok()?;
        (cur.state == WorkerState::Failed).then_some(())
    })
    .await;
    h.wait_gone(&w.identifier).await; // a failed worker vanishes
}

async fn an_immediate_create_failure_creates_nothing(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    h.fault(json!({"endpoint": "add_worker", "fault": {"kind": "fail_create", "immediate": true}}));
    let e = h.cloud.add_worker(&h.cluster, g.id).await;
    assert!(matches!(e, Err(CloudError::Transient { status: Some(500), .. })), "{e:?}");
    assert_eq!(h.workers_ever(), 0);
    assert_eq!(h.add_requests(), 1, "a 500 on add is not retried");
}

async fn a_stuck_worker_stays_provisioning(kind: Kind) {
    let fault = json!({"endpoint": "add_worker", "fault": {"kind": "stuck_provisioning"}});
    let states = Harness::states_long_after_a_normal_join(kind, fault).await;
    assert_eq!(states, (WorkerState::Ready, WorkerState::Provisioning));
}

async fn a_worker_that_never_joins_stays_running(kind: Kind) {
    let fault = json!({"endpoint": "add_worker", "fault": {"kind": "never_join"}});
    let states = Harness::states_long_after_a_normal_join(kind, fault).await;
    assert_eq!(states, (WorkerState::Ready, WorkerState::Running));
}

async fn slow_creates_take_longer_than_normal_ones(kind: Kind) {
    let h = Harness::frozen(kind).await;
    let factor = 20.0;
    assert!(factor * h.shortest_normal_join() > h.longest_normal_join(), "the factor must separate the two");
    let g = h.group("pool", 2).await;
    let normal = h.add_and_discover_frozen(g.id).await;
    h.fault(json!({"endpoint": "add_worker", "fault": {"kind": "slow", "factor": factor}}));
    h.cloud.add_worker(&h.cluster, g.id).await.expect("add");
    let ready = |workers: Vec<vpsie_autoscaler::cloud::Worker>| {
        workers.into_iter().filter(|w| w.state == WorkerState::Ready).map(|w| w.identifier).collect::<Vec<_>>()
    };
    h.sim.advance_clock(h.longest_normal_join());
    assert_eq!(ready(h.workers().await), [normal.identifier], "only the normal worker joined");
    h.sim.advance_clock(factor * h.longest_normal_join());
    assert_eq!(ready(h.workers().await).len(), 2, "the slow worker joins in the end");
}

async fn quota_refusals_are_quota_exceeded_and_create_nothing(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    let rule = h.fault(json!({"endpoint": "add_worker", "fault": {"kind": "quota"}}));
    let e = h.cloud.add_worker(&h.cluster, g.id).await;
    assert!(matches!(e, Err(CloudError::QuotaExceeded { .. })), "{e:?}");
    assert!(e.as_ref().is_err_and(|e| !e.is_retryable()));
    assert_eq!(h.workers_ever(), 0);
    h.sim.remove_fault(rule.id);

    h.fault(json!({"endpoint": "add_worker", "fault": {"kind": "quota", "max_workers": 1}}));
    h.cloud.add_worker(&h.cluster, g.id).await.expect("first fits");
    let e = h.cloud.add_worker(&h.cluster, g.id).await;
    assert!(matches!(e, Err(CloudError::QuotaExceeded { .. })), "{e:?}");
    assert_eq!(h.workers_ever(), 1);

    h.fault(json!({"endpoint": "add_group", "fault": {"kind": "quota",
        "message": "Your plan does not allow this size in this datacenter"}}));
    let e = h.cloud.ensure_group(&h.cluster, &h.offering(8), "big").await;
    assert!(matches!(e, Err(CloudError::QuotaExceeded { .. })), "{e:?}");
}

async fn delete_failures_leave_the_worker_and_a_later_delete_succeeds(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    let w = h.add_and_discover(g.id).await;
    let rule = h.fault(json!({"endpoint": "delete_worker",
        "fault": {"kind": "delete_fail", "status": 503}}));
    let e = h.cloud.delete_worker(&h.cluster, &w.identifier).await;
    assert!(matches!(e, Err(CloudError::Transient { status: Some(503), .. })), "{e:?}");
    let cur = h.cloud.get_worker(&h.cluster, &w.identifier).await.expect("still there");
    assert_ne!(cur.state, WorkerState::Deleting);
    h.sim.remove_fault(rule.id);
    h.settle_breaker().await;
    h.cloud.delete_worker(&h.cluster, &w.identifier).await.expect("delete works again");
}

async fn a_delete_answered_not_found_still_removes_the_worker(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    let w = h.add_and_discover(g.id).await;
    h.fault(json!({"endpoint": "delete_worker", "times": 1,
        "fault": {"kind": "delete_already_gone"}}));
    let e = h.cloud.delete_worker(&h.cluster, &w.identifier).await;
    assert!(matches!(e, Err(CloudError::NotFound { .. })), "{e:?}");
    assert!(deleted_or_gone(e).is_ok());
    h.wait_gone(&w.identifier).await;
}

async fn a_timed_out_add_is_never_retried_and_creates_exactly_one_worker(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    let before = h.workers().await;
    h.fault(json!({"endpoint": "add_worker", "fault": {"kind": "duplicate_create_on_retry"}}));
    let e = h.cloud.add_worker(&h.cluster, g.id).await;
    assert!(matches!(e, Err(CloudError::Transient { status: Some(504), .. })), "{e:?}");
    assert_eq!(h.add_requests(), 1);
    // Unknown outcome: discovery by diff settles it.
    let found = eventually("the add's worker is listed", Duration::from_secs(5), || async {
        match find_new_worker(&before, &h.workers().await, Some(g.id), None) {
            NewWorker::NotYet => None,
            other => Some(other),
        }
    })
    .await;
    assert!(matches!(found, NewWorker::Found(_)), "{found:?}");
    // The request log covers the whole discovery: no add was sent behind the caller's back meanwhile.
    assert_eq!(h.add_requests(), 1);
    assert_eq!(h.workers_ever(), 1);
}

async fn a_rate_limited_add_is_refused_before_acting_and_creates_nothing(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    h.fault(json!({"endpoint": "add_worker", "times": 1,
        "fault": {"kind": "rate_limit", "retry_after": {"style": "seconds", "secs": 1}}}));
    let e = h.cloud.add_worker(&h.cluster, g.id).await.expect_err("the add is refused");
    assert!(e.proves_nothing_was_done(), "{e:?}");
    assert_eq!(h.add_requests(), 1, "an add is never retried, not even after a 429");
    assert_eq!(h.workers_ever(), 0);
    // Asking again once the limit has passed is safe: it creates the one worker.
    h.cloud.add_worker(&h.cluster, g.id).await.expect("the second add is accepted");
    assert_eq!(h.workers_ever(), 1);
}

async fn revoked_and_expired_tokens_are_replaced_transparently(kind: Kind) {
    let h = Harness::new(kind).await;
    h.workers().await; // first login: a 1 h token
    let mut s = h.sim.settings();
    s.token_ttl_secs = 1;
    h.sim.set_settings(s);
    // Revoked server-side: the next call gets a 401, logs in again (a 1 s token) and succeeds.
    let revoke = h.fault(json!({"endpoint": "cluster", "times": 1, "fault": {"kind": "revoke_tokens"}}));
    h.workers().await;
    // Near expiry the client logs in again before the server would refuse the token.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.workers().await;
    let fired = h.sim.faults().iter().find(|r| r.id == revoke.id).map(|r| r.hits);
    assert_eq!(fired, Some(1), "the tokens were revoked");
    let requests = h.sim.requests();
    let exchanges = requests.iter().filter(|r| r.endpoint == "auth" && r.status == 200).count();
    let refused = requests.iter().filter(|r| r.status == 401).count();
    match kind {
        // The in-process provider sends no token: nothing to replace, nothing refused.
        Kind::InProc => assert_eq!((exchanges, refused), (0, 0), "{requests:?}"),
        Kind::Http | Kind::Metered => {
            assert!(exchanges >= 3, "re-authenticated: {exchanges}");
            assert_eq!(refused, 1, "only the revoked token was refused");
        }
    }
}

async fn a_partition_fails_calls_until_it_heals(kind: Kind) {
    let h = Harness::new(kind).await;
    h.workers().await;
    // Healed by removing the rule, not by its duration running out while the calls are still being made.
    let partition = h.fault(json!({"fault": {"kind": "partition", "duration_ms": 600_000}}));
    let mut saw_open = false;
    for _ in 0..4 {
        let e = h.workers_or_err().await.expect_err("partitioned");
        assert!(e.is_retryable(), "{e:?}");
        saw_open |= h.cloud.breaker_state() == Some(vpsie_autoscaler::cloud::BreakerState::Open);
    }
    let cut = h.sim.requests().iter().filter(|r| r.faults.contains(&partition.id)).count();
    match kind {
        // No breaker in process: every call reached the simulator and was cut.
        Kind::InProc => assert_eq!((cut, h.cloud.breaker_state()), (4, None)),
        Kind::Http | Kind::Metered => {
            assert!(cut >= 1, "the partition cut requests");
            assert!(saw_open, "the breaker opened during the partition");
        }
    }
    h.sim.remove_fault(partition.id);
    eventually("the partition heals", Duration::from_secs(5), || async { h.workers_or_err().await.ok() }).await;
}

async fn api_hostname_casing_does_not_break_discovery(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    let first = h.add_and_discover(g.id).await; // listed lower-case
    h.fault(json!({"endpoint": "cluster", "fault": {"kind": "hostname_case", "case": "upper"}}));
    let second = h.add_and_discover(g.id).await;
    assert_eq!(second.hostname, second.hostname.to_uppercase());
    assert_ne!(second.identifier, first.identifier, "the old worker is not re-claimed");
    let found = h.cloud.find_workers(&h.cluster, &WorkerQuery::hostname(first.hostname.clone())).await.expect("find");
    assert_eq!(found.len(), 1);
}

async fn the_add_answer_shape_is_honoured(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    let plain = h.cloud.add_worker(&h.cluster, g.id).await.expect("add");
    assert_eq!(plain, AddOutcome::default());
    h.fault(json!({"endpoint": "add_worker", "times": 1,
        "fault": {"kind": "add_response", "shape": "object"}}));
    let named = h.cloud.add_worker(&h.cluster, g.id).await.expect("add");
    let id = named.identifier.clone().expect("object answers name the worker");
    h.fault(json!({"endpoint": "add_worker", "times": 1,
        "fault": {"kind": "add_response", "shape": "object_without_identifier"}}));
    let bare = h.cloud.add_worker(&h.cluster, g.id).await.expect("add");
    assert_eq!(bare.identifier, None);
    let w = eventually("the named worker is listed", Duration::from_secs(5), || async {
        h.cloud.get_worker(&h.cluster, &id).await.ok()
    })
    .await;
    assert_eq!(Some(w.hostname), named.hostname);
}

async fn the_cost_meter_accrues_monthly_over_720_per_hour(kind: Kind) {
    let h = Harness::new(kind).await;
    let g = h.group("pool", 2).await;
    h.cloud.add_worker(&h.cluster, g.id).await.expect("add");
    h.sim.advance_clock(3600.0);
    let cost = h.sim.lock().world.cost();
    let hourly = 24.0 / 720.0;
    assert!(cost.total_usd >= hourly && cost.total_usd < hourly * 1.2, "{cost:?}");
    assert!((cost.hourly_usd_now - hourly).abs() < 1e-9);
}

async fn list_lag_hides_new_workers_for_a_while(kind: Kind) {
    let mut cfg = cloud_common::sim_config();
    cfg.settings.time_scale = cloud_common::FROZEN;
    cfg.settings.list_lag_secs = 1500.0;
    let h = Harness::with(kind, cfg).await;
    let g = h.group("pool", 2).await;
    h.cloud.add_worker(&h.cluster, g.id).await.expect("add");
    h.sim.advance_clock(h.longest_normal_join());
    assert_eq!(h.workers_ever(), 1);
    assert!(h.workers().await.is_empty(), "listed before the lag ran out");
    h.sim.advance_clock(1500.0);
    let listed = h.workers().await;
    assert_eq!(listed.iter().map(|w| w.state).collect::<Vec<_>>(), [WorkerState::Ready], "{listed:?}");
}

async fn a_fault_with_probability_zero_never_fires(kind: Kind) {
    let h = Harness::new(kind).await;
    let rule = h.fault(json!({"probability": 0.0,
        "fault": {"kind": "http_error", "status": 500}}));
    for _ in 0..5 {
        h.workers().await;
    }
    let hits = h.sim.faults().iter().find(|r| r.id == rule.id).map(|r| r.hits);
    assert_eq!(hits, Some(0));
}
