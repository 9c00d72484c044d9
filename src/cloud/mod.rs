//! The cloud layer: what the autoscaler needs from VPSie, in its own words.
//!
//! - [`CloudProvider`]: the contract, implemented by the real HTTP client
//!   ([`vpsie::VpsieClient`]), the in-process simulator ([`sim::SimCloud`]) and the metrics
//!   decorator ([`metered::Metered`]).
//! - [`discovery`]: the "find what an add created" protocol.
//! - [`group_name`]: the names of the VPSie groups the autoscaler creates, built and parsed.
//!
//! Nothing here imports `kube`: the module could become its own crate unchanged.

pub mod discovery;
pub mod error;
pub mod group_name;
pub mod metered;
pub mod sim;
pub mod types;
pub mod vpsie;

use async_trait::async_trait;

pub use discovery::{NewWorker, find_new_worker};
pub use error::CloudError;
pub use types::{AddOutcome, BreakerState, CloudGroup, HOURS_PER_MONTH, Offering, Worker, WorkerQuery, WorkerState};

/// A VPSie-like cloud that runs managed-Kubernetes workers in node groups.
///
/// `cluster` is always the VPSie cluster identifier (UUID). Every method may fail with any
/// [`CloudError`]; callers decide on retry with [`CloudError::is_retryable`] and the
/// rules below, never by matching messages.
#[async_trait]
pub trait CloudProvider: Send + Sync {
    /// The sizes on offer in a datacenter, with prices. `hourly_price` is the catalogue's
    /// hourly figure if it has one, else `monthly_price / 720`. An unknown datacenter is
    /// `NotFound`.
    async fn offerings(&self, datacenter: &str) -> Result<Vec<Offering>, CloudError>;

    /// The cluster's VPSie node groups. An unknown cluster is `NotFound`.
    async fn groups(&self, cluster: &str) -> Result<Vec<CloudGroup>, CloudError>;

    /// Returns the group named `group_name`, creating it for `offering` if it is missing.
    ///
    /// Creation answers no id, so the group is found by re-listing and matching the name.
    /// The create call itself is never repeated: after an unclear failure the groups are
    /// listed once more and the group returned if it landed. A group of that name with a
    /// different size is `Permanent` (we never silently reuse the wrong plan).
    async fn ensure_group(
        &self,
        cluster: &str,
        offering: &Offering,
        group_name: &str,
    ) -> Result<CloudGroup, CloudError>;

    /// The workers of one group (masters excluded). Workers whose group the API does not
    /// report are left out; use [`CloudProvider::find_workers`] for the whole cluster.
    async fn list_workers(&self, cluster: &str, group: u64) -> Result<Vec<Worker>, CloudError> {
        let query = WorkerQuery { group_id: Some(group), ..WorkerQuery::default() };
        self.find_workers(cluster, &query).await
    }

    /// The cluster's workers (masters excluded) that match `query`; an empty query lists
    /// them all. This is the listing to snapshot before an add (see [`discovery`]).
    async fn find_workers(&self, cluster: &str, query: &WorkerQuery) -> Result<Vec<Worker>, CloudError>;

    /// One worker by identifier; `NotFound` if the cluster does not list it (any more).
    async fn get_worker(&self, cluster: &str, identifier: &str) -> Result<Worker, CloudError> {
        self.find_workers(cluster, &WorkerQuery::identifier(identifier))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| CloudError::NotFound { message: "worker not listed in cluster".into() })
    }

    /// Asks for one more worker in `group`. Sent exactly once, never retried by the
    /// implementation: a lost answer must not become two workers. The outcome carries an
    /// identifier or hostname only if the API gave one (usually it does not); the caller
    /// finds the worker by diffing listings taken before and after (see [`discovery`]).
    /// On a `Transient` error the add may or may not have happened; on `RateLimited` or `CircuitOpen` it did
    /// not (see [`CloudError::proves_nothing_was_done`]), so the caller may ask again later.
    async fn add_worker(&self, cluster: &str, group: u64) -> Result<AddOutcome, CloudError>;

    /// Deletes one worker by identifier. Idempotent and safe to retry: once the worker is
    /// gone (or was never there) the answer is `NotFound`, which callers treat as done.
    /// Success means "deletion accepted"; the worker may stay listed as `Deleting` a while.
    async fn delete_worker(&self, cluster: &str, identifier: &str) -> Result<(), CloudError>;

    /// The client's circuit breaker, for the metrics gauge; `None` if it has none.
    fn breaker_state(&self) -> Option<BreakerState> {
        None
    }
}

/// Treats `NotFound` from a delete as success, per the delete contract.
pub fn deleted_or_gone(result: Result<(), CloudError>) -> Result<(), CloudError> {
    match result {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}
