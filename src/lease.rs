//! Leader election on a `coordination.k8s.io/v1` Lease. Every replica watches; only the holder acts.
//!
//! Expiry is judged by this replica's own monotonic clock (how long the record has stayed unchanged
//! since we first saw it), never by comparing timestamps written by another machine, so clock skew
//! between nodes cannot hand the lease to two replicas. Every write carries the resourceVersion it
//! read, so two candidates racing for an expired lease cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, api::ObjectMeta, api::PostParams};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading lease failed: {0}")]
    Read(#[source] kube::Error),
    #[error("writing lease failed: {0}")]
    Write(#[source] kube::Error),
    #[error("lost the leader lease {0}")]
    Lost(String),
}

impl LeaseError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read(_) => "LeaseRead",
            Self::Write(_) => "LeaseWrite",
            Self::Lost(_) => "LeaseLost",
        }
    }
}

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    /// How long a holder's claim lasts without renewal.
    pub lease_duration: Duration,
    /// A holder that has not renewed for this long gives up (must be shorter than `lease_duration`).
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry_period: Duration,
}

/// The record as last seen, and when we first saw it in that state.
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    since: Instant,
}

pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    observed: Option<Observed>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        Self { api: Api::namespaced(client, &cfg.namespace), cfg, observed: None }
    }

    fn lease_secs(&self) -> i32 {
        self.cfg.lease_duration.as_secs().max(1) as i32
    }

    fn our_spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.lease_secs()),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt: create the lease, renew it, or take it over if it expired. `Ok(true)` means we hold
    /// it now. A lost write race is `Ok(false)`, not an error.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let Some(current) = self.api.get_opt(&self.cfg.name).await.map_err(LeaseError::Read)? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.cfg.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.our_spec(None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(LeaseError::Write(e)),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.cfg.identity.as_str());

        let changed = match &self.observed {
            Some(o) => o.holder != holder || o.renew_time != spec.renew_time,
            None => true,
        };
        if changed {
            self.observed =
                Some(Observed { holder: holder.clone(), renew_time: spec.renew_time.clone(), since: Instant::now() });
        }
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(self.lease_secs()).max(1) as u64);
        let expired = self.observed.as_ref().is_some_and(|o| o.since.elapsed() > duration);

        let next = if ours {
            self.our_spec(spec.acquire_time.clone(), spec.lease_transitions.unwrap_or(0))
        } else if holder.is_none() || expired {
            self.our_spec(None, spec.lease_transitions.unwrap_or(0) + 1)
        } else {
            return Ok(false);
        };
        let mut lease = current;
        lease.spec = Some(next);
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(written) => {
                let spec = written.spec.unwrap_or_default();
                self.observed =
                    Some(Observed { holder: spec.holder_identity, renew_time: spec.renew_time, since: Instant::now() });
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(LeaseError::Write(e)),
        }
    }

    /// Gives the lease up so that another replica can take it at once. Only clears it if we hold it.
    pub async fn release(&mut self) -> Result<(), LeaseError> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await.map_err(LeaseError::Read)? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await.map_err(LeaseError::Write)?;
        Ok(())
    }

    /// Campaigns until `shutdown`, publishing leadership on `leader`. Returns `Err(Lost)` when the lease
    /// we held was taken or could not be renewed within the deadline: the caller must stop acting and
    /// exit, since another replica may act already. On shutdown a held lease is released.
    pub async fn run(mut self, leader: watch::Sender<bool>, shutdown: CancellationToken) -> Result<(), LeaseError> {
        let mut leading = false;
        let mut last_renewal = Instant::now();
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    last_renewal = Instant::now();
                    if !leading {
                        leading = true;
                        tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "became leader");
                        leader.send_replace(true);
                    }
                }
                Ok(false) if leading => {
                    leader.send_replace(false);
                    return Err(LeaseError::Lost(format!("{}: taken by another holder", self.cfg.name)));
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election attempt failed");
                    if leading && last_renewal.elapsed() > self.cfg.renew_deadline {
                        leader.send_replace(false);
                        return Err(LeaseError::Lost(format!(
                            "{}: not renewed within {:?}",
                            self.cfg.name, self.cfg.renew_deadline
                        )));
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        }
        if leading {
            leader.send_replace(false);
            if let Err(e) = self.release().await {
                tracing::warn!(error = %e, "could not release the leader lease on shutdown");
            } else {
                tracing::info!(lease = %self.cfg.name, "released the leader lease");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
