//! How the large watches (pods, nodes) learn what exists before they watch.
//!
//! Asked with `resourceVersion=0`, the API server answers a list from its watch cache and ignores
//! `limit`: 30,000 pods arrive as one body that the client holds and parses whole, which set both the
//! controller's memory high-water mark and its time to ready. A streaming list (Kubernetes watch-list,
//! `sendInitialEvents`) sends the same objects one watch event at a time from the same cache; where the
//! server does not offer it, a list paged by `limit` (a consistent read, which the server pages) bounds
//! what is held at once to one page.
//!
//! Pipeline: probe once at start (a watch-list of a pod no one has), choose, and every large watch uses
//! the choice.

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{WatchEvent, WatchParams},
    runtime::watcher,
};

/// Objects per page when the server cannot stream: client-go's and kube's default.
pub const PAGE_SIZE: u32 = 500;
/// The annotation on the bookmark that ends a streaming list's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";
/// Nothing is named so: the probe's watch-list has no initial objects to send.
const PROBE_NAME: &str = "vpsie-autoscaler-watch-list-probe";
/// Server-side timeout of the probe's watch, in seconds.
const PROBE_TIMEOUT_SECS: u32 = 2;

/// How a large watch fetches its initial state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialList {
    /// One watch whose initial events are the existing objects, ended by a bookmark.
    Streaming,
    /// Pages of [`PAGE_SIZE`], then a watch from the list's resource version.
    Paged,
}

impl InitialList {
    pub fn watcher_config(self) -> watcher::Config {
        match self {
            Self::Streaming => watcher::Config::default().streaming_lists(),
            Self::Paged => watcher::Config::default().page_size(PAGE_SIZE),
        }
    }
}

/// Asks the server for a streaming list of one pod that does not exist: a server that streams answers
/// with the bookmark that ends the initial events; one that does not refuses the parameter (the
/// feature gate is off) or ignores it and sends no such bookmark before the watch times out.
pub async fn probe(client: &Client) -> InitialList {
    let pods: Api<Pod> = Api::all(client.clone());
    let params =
        WatchParams::streaming_lists().fields(&format!("metadata.name={PROBE_NAME}")).timeout(PROBE_TIMEOUT_SECS);
    let answer = async {
        let events = pods.watch(&params, "0").await?;
        let mut events = std::pin::pin!(events.into_stream());
        while let Some(event) = events.try_next().await? {
            if ends_initial_events(&event) {
                return Ok::<_, kube::Error>(true);
            }
        }
        Ok(false)
    };
    // The server ends the watch after its timeout; this bounds a server that does not.
    let deadline = std::time::Duration::from_secs(u64::from(PROBE_TIMEOUT_SECS) + 5);
    let choice = match tokio::time::timeout(deadline, answer).await {
        Ok(Ok(true)) => InitialList::Streaming,
        Ok(Ok(false)) => InitialList::Paged,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "the API server refused a streaming list; large watches list in pages");
            InitialList::Paged
        }
        Err(_) => InitialList::Paged,
    };
    tracing::info!(initial_list = ?choice, "large watches' initial list chosen");
    choice
}

fn ends_initial_events(event: &WatchEvent<Pod>) -> bool {
    matches!(event, WatchEvent::Bookmark(b) if b.metadata.annotations.get(INITIAL_EVENTS_END).is_some_and(|v| v == "true"))
}

#[cfg(test)]
mod tests {
    use http::{Request, Response, StatusCode};
    use kube::{Client, client::Body};

    use super::{InitialList, PROBE_NAME, probe};

    /// Answers the probe's one request with `status` and `body`, after checking it asks what a streaming
    /// list needs.
    async fn probe_against(status: StatusCode, body: &'static str) -> InitialList {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.expect("the probe asks");
            let query = request.uri().query().unwrap_or_default().to_string();
            send.send_response(Response::builder().status(status).body(Body::from(body.as_bytes().to_vec())).unwrap());
            query
        });
        let choice = probe(&Client::new(service, "default")).await;
        let query = server.await.unwrap();
        for wanted in
            ["watch=true", "sendInitialEvents=true", "resourceVersionMatch=NotOlderThan", "allowWatchBookmarks=true"]
        {
            assert!(query.contains(wanted), "{wanted} in {query}");
        }
        assert!(query.contains(PROBE_NAME), "the probe watches a pod no one has: {query}");
        choice
    }

    #[tokio::test]
    async fn a_server_that_ends_the_initial_events_with_a_bookmark_gets_streaming_lists() {
        let bookmark = r#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"12","annotations":{"k8s.io/initial-events-end":"true"}}}}
"#;
        assert_eq!(probe_against(StatusCode::OK, bookmark).await, InitialList::Streaming);
    }

    #[tokio::test]
    async fn a_server_whose_watch_list_gate_is_off_gets_paged_lists() {
        let refused = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled","reason":"Invalid","code":422}"#;
        assert_eq!(probe_against(StatusCode::UNPROCESSABLE_ENTITY, refused).await, InitialList::Paged);
    }

    #[tokio::test]
    async fn a_server_that_ignores_the_parameter_and_sends_no_end_bookmark_gets_paged_lists() {
        let plain = r#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"12"}}}
"#;
        assert_eq!(probe_against(StatusCode::OK, plain).await, InitialList::Paged);
    }

    #[test]
    fn paged_lists_ask_for_pages_of_five_hundred_from_a_consistent_read() {
        let config = InitialList::Paged.watcher_config();
        assert_eq!(config.page_size, Some(500));
        assert_eq!(config.list_semantic, kube::runtime::watcher::ListSemantic::MostRecent);
        assert_eq!(
            InitialList::Streaming.watcher_config().initial_list_strategy,
            kube::runtime::watcher::InitialListStrategy::StreamingList
        );
    }
}
