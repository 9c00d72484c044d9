//! The response parser is total: arbitrary bytes, arbitrary JSON and arbitrary header
//! values never panic, and a body flagged `error: true` is never a success.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use vpsie_autoscaler::cloud::vpsie::envelope::{parse_response, parse_retry_after};
use vpsie_autoscaler::cloud::vpsie::model;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![Just("1"), Just("0"), Just("true"), Just("false"), Just("12.5"), Just("-3"), Just("NaN")]
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("error".to_string()),
            Just("data".to_string()),
            Just("code".to_string()),
            Just("message".to_string()),
            Just("total".to_string()),
            Just("id".to_string()),
            Just("identifier".to_string()),
            Just("hostname".to_string()),
            Just("nodes".to_string()),
            Just("price".to_string()),
            Just("status".to_string()),
            Just("node_type".to_string()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_response(status, &body, None);
    }

    #[test]
    fn arbitrary_json_never_panics_and_model_mapping_is_total(status in 100u16..600, v in json_value()) {
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        if let Ok(env) = parse_response(status, &bytes, Some(Duration::from_secs(1))) {
            let _ = model::offerings(&env.data);
            let _ = model::groups(&env.data);
            let _ = model::workers(&env.data);
            let _ = model::add_outcome(&env.data);
        }
        let _ = model::workers(&v);
        let _ = model::offerings(&v);
    }

    #[test]
    fn an_error_flag_is_never_a_success(status in 100u16..600, flag in prop_oneof![
        Just(json!(true)), Just(json!(1)), Just(json!("1")), Just(json!("true")), Just(json!("Rate limit"))
    ], data in json_value()) {
        let body = serde_json::to_vec(&json!({"error": flag, "data": data})).unwrap_or_default();
        prop_assert!(parse_response(status, &body, None).is_err());
    }

    #[test]
    fn non_2xx_statuses_are_never_a_success(status in 300u16..600, v in json_value()) {
        let body = serde_json::to_vec(&v).unwrap_or_default();
        prop_assert!(parse_response(status, &body, None).is_err());
    }

    #[test]
    fn retry_after_parsing_never_panics(s in ".{0,40}") {
        let _ = parse_retry_after(&s, jiff::Timestamp::now());
    }
}
