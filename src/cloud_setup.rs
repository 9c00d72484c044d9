//! Builds the cloud provider the controller uses: the real VPSie HTTP client, credentials from the
//! Secret, wrapped in the metering decorator. Credentials never leave this function except inside the
//! client, whose types redact them.

use std::{collections::BTreeMap, sync::Arc};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use prometheus_client::registry::Registry;

use crate::{
    cli::RunArgs,
    cloud::{
        CloudProvider,
        metered::Metered,
        vpsie::{Credentials, VpsieClient, VpsieConfig},
    },
};

pub async fn provider(
    client: &Client,
    args: &RunArgs,
    breaker: &crate::config::CircuitBreaker,
    registry: &mut Registry,
) -> anyhow::Result<Arc<dyn CloudProvider>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &args.vpsie_secret_namespace);
    let secret = secrets.get(&args.vpsie_secret).await.with_context(|| {
        format!("cannot read the VPSie credentials Secret {}/{}", args.vpsie_secret_namespace, args.vpsie_secret)
    })?;
    let data: BTreeMap<String, String> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
        .chain(secret.string_data.unwrap_or_default())
        .collect();
    let credentials = Credentials::from_secret_map(&data).with_context(|| {
        format!("the Secret {}/{} holds no usable VPSie credentials", args.vpsie_secret_namespace, args.vpsie_secret)
    })?;
    let mut config = if is_loopback(&args.vpsie_url) {
        VpsieConfig::for_simulator(args.vpsie_url.clone())
    } else {
        VpsieConfig { base_url: args.vpsie_url.clone(), ..VpsieConfig::default() }
    };
    config.breaker.failure_threshold = breaker.failure_threshold;
    config.breaker.open_for = breaker.open_for();
    let client = VpsieClient::new(config, credentials).context("configuring the VPSie API client")?;
    client.register_metrics(registry);
    Ok(Arc::new(Metered::new(client, registry)))
}

/// The simulator runs on loopback; the real API never does.
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    host == "127.0.0.1" || host == "localhost" || rest.starts_with("[::1]")
}
