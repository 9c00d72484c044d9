//! The drain against a real control plane: the Eviction API and PDBs of a real kube-apiserver, the
//! ReplicaSet, DaemonSet and disruption controllers of a real kube-controller-manager, a real scheduler,
//! and KWOK as the kubelet. Every drain runs with the controller's own ServiceAccount token, so the
//! shipped ClusterRole is proven sufficient too.

mod support;

use std::{path::PathBuf, sync::OnceLock, time::Duration};

use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{Node, Pod},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{TestNamespace, create_nodes, env, eventually};
use tokio_util::sync::CancellationToken;
use vpsie_autoscaler::drain::{self, DrainError, DrainPolicy, PodRef, SkipReason};

const WAIT: Duration = Duration::from_secs(30);

/// Short enough that a suite full of timeouts stays quick, long enough for evictions and KWOK's deletions.
fn policy(deadline_ms: u64) -> DrainPolicy {
    DrainPolicy {
        deadline: Duration::from_millis(deadline_ms),
        retry_interval: Duration::from_millis(200),
        force: false,
        evict_bare_pods: false,
    }
}

/// A client with exactly the rights of the shipped ClusterRole. The kubeconfig is made once per binary, in
/// the control plane's state dir (which down.sh removes); the client is made per test because each test
/// has its own runtime.
async fn controller() -> Client {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    let path = KUBECONFIG.get_or_init(|| {
        let dir = env().state_dir.join(format!("e2e-drain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("kubeconfig dir");
        env().controller_kubeconfig(&dir)
    });
    support::client_from(path).await
}

fn object<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("test fixture")
}

fn pod_spec(owner: &str, extra: Value) -> Value {
    let mut spec = json!({
        "nodeSelector": {"e2e-owner": owner},
        "terminationGracePeriodSeconds": 5,
        "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    spec
}

fn deployment(name: &str, owner: &str, replicas: i32, extra_spec: Value) -> Deployment {
    object(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(owner, extra_spec)},
        },
    }))
}

struct Cluster {
    admin: Client,
    ns: TestNamespace,
}

impl Cluster {
    async fn new(prefix: &str) -> Self {
        let env = env();
        Self { admin: env.admin().await, ns: env.namespace(prefix).await }
    }

    fn node_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.ns.name)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), &self.ns.name)
    }

    async fn create<T>(&self, obj: T) -> T
    where
        T: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<T> = Api::namespaced(self.admin.clone(), &self.ns.name);
        api.create(&PostParams::default(), &obj).await.expect("create test object")
    }

    /// Running, not terminating pods of this namespace on `node` with label `app`.
    async fn running_on(&self, node: &str, app: &str) -> Vec<Pod> {
        let params = ListParams::default().labels(&format!("app={app}")).fields(&format!("spec.nodeName={node}"));
        let list = self.pods().list(&params).await.expect("list pods");
        list.items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect()
    }

    async fn wait_running_on(&self, node: &str, app: &str, count: usize) -> Vec<Pod> {
        eventually(&format!("{count} running {app} pods on {node}"), WAIT, || async {
            let pods = self.running_on(node, app).await;
            (pods.len() == count).then_some(pods)
        })
        .await
    }

    /// Every pod of this namespace bound to `node`, terminating or not.
    async fn any_on(&self, node: &str) -> Vec<Pod> {
        let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
        self.pods().list(&params).await.expect("list pods").items
    }

    /// A PDB with `maxUnavailable: 0` over `app`, once the disruption controller has counted its pods, so
    /// evictions are refused because of the budget and not because it is still unprocessed.
    async fn blocking_pdb(&self, app: &str, pods: i32) {
        self.create::<PodDisruptionBudget>(object(json!({
            "metadata": {"name": app},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": app}}},
        })))
        .await;
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(self.admin.clone(), &self.ns.name);
        eventually(&format!("PDB {app} observed"), WAIT, || async {
            let status = pdbs.get(app).await.ok()?.status?;
            (status.expected_pods == Some(pods) && status.disruptions_allowed == Some(0)).then_some(())
        })
        .await;
    }

    async fn node(&self, name: &str) -> Option<Node> {
        Api::<Node>::all(self.admin.clone()).get_opt(name).await.expect("get node")
    }

    async fn is_cordoned(&self, name: &str) -> bool {
        let node = self.node(name).await.expect("node exists");
        node.spec.and_then(|s| s.unschedulable) == Some(true)
    }

    async fn set_unschedulable(&self, name: &str, value: bool) {
        Api::<Node>::all(self.admin.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": value}})))
            .await
            .expect("patch node");
    }
}

fn names(pods: &[Pod]) -> Vec<String> {
    let mut names: Vec<String> = pods.iter().filter_map(|p| p.metadata.name.clone()).collect();
    names.sort();
    names
}

fn ref_names(pods: &[PodRef]) -> Vec<String> {
    let mut names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_deployments_pods_are_evicted_and_rescheduled_elsewhere_and_the_drained_node_stays_cordoned() {
    let c = Cluster::new("drain-deploy").await;
    let (a, b) = (c.node_name("a"), c.node_name("b"));
    let _a = create_nodes(env(), &c.ns.name, &[&a]).await;
    c.create(deployment("web", &c.ns.name, 3, json!({}))).await;
    let before = c.wait_running_on(&a, "web", 3).await;
    let _b = create_nodes(env(), &c.ns.name, &[&b]).await;

    let report = drain::drain(&controller().await, &a, &policy(20_000), Timestamp::now(), &CancellationToken::new())
        .await
        .expect("drain completes");

    assert!(report.cordoned_by_us);
    assert_eq!(ref_names(&report.evicted), names(&before));
    assert!(report.force_deleted.is_empty());
    assert!(c.is_cordoned(&a).await, "the drained node must stay cordoned");
    assert!(c.any_on(&a).await.is_empty(), "the drain returned before its evicted pods were gone");
    let moved = c.wait_running_on(&b, "web", 3).await;
    assert!(names(&moved).iter().all(|n| !names(&before).contains(n)), "replacements are new pods");
}

#[tokio::test]
async fn a_daemonset_pod_stays_on_the_node_and_the_drain_still_completes() {
    let c = Cluster::new("drain-ds").await;
    let a = c.node_name("a");
    let _a = create_nodes(env(), &c.ns.name, &[&a]).await;
    c.create::<DaemonSet>(object(json!({
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": pod_spec(&c.ns.name, json!({"nodeSelector": {"kubernetes.io/hostname": a}}))},
        },
    })))
    .await;
    c.create(deployment("web", &c.ns.name, 1, json!({}))).await;
    let agent = c.wait_running_on(&a, "agent", 1).await;
    let web = c.wait_running_on(&a, "web", 1).await;

    let report = drain::drain(&controller().await, &a, &policy(20_000), Timestamp::now(), &CancellationToken::new())
        .await
        .expect("drain completes despite the DaemonSet pod");

    assert_eq!(ref_names(&report.evicted), names(&web));
    let skipped: Vec<_> = report.skipped.iter().map(|s| (s.pod.name.clone(), s.reason)).collect();
    assert_eq!(skipped, [(names(&agent)[0].clone(), SkipReason::DaemonSet)]);
    assert_eq!(names(&c.running_on(&a, "agent").await), names(&agent), "the DaemonSet pod must be untouched");
}

#[tokio::test]
async fn a_pod_with_an_empty_dir_volume_is_evicted() {
    let c = Cluster::new("drain-emptydir").await;
    let a = c.node_name("a");
    let _a = create_nodes(env(), &c.ns.name, &[&a]).await;
    let scratch = json!({"volumes": [{"name": "scratch", "emptyDir": {}}]});
    c.create(deployment("cache", &c.ns.name, 1, scratch)).await;
    let before = c.wait_running_on(&a, "cache", 1).await;

    let report = drain::drain(&controller().await, &a, &policy(20_000), Timestamp::now(), &CancellationToken::new())
        .await
        .expect("drain completes");

    assert_eq!(ref_names(&report.evicted), names(&before));
    assert!(c.any_on(&a).await.is_empty());
}

#[tokio::test]
async fn a_pdb_allowing_no_disruption_ends_the_drain_in_a_timeout_naming_pod_and_pdb_and_nothing_is_deleted() {
    let c = Cluster::new("drain-pdb").await;
    let a = c.node_name("a");
    let _a = create_nodes(env(), &c.ns.name, &[&a]).await;
    c.create(deployment("db", &c.ns.name, 1, json!({}))).await;
    let db = c.wait_running_on(&a, "db", 1).await;
    c.blocking_pdb("db", 1).await;

    let started = std::time::Instant::now();
    let err = drain::drain(&controller().await, &a, &policy(2_000), Timestamp::now(), &CancellationToken::new())
        .await
        .expect_err("the PDB must stop the drain");
    assert!(started.elapsed() >= Duration::from_secs(2), "gave up before its deadline: {:?}", started.elapsed());

    let DrainError::Timeout { ref node, ref pods, ref pdbs } = err else { panic!("expected a timeout, got {err}") };
    assert_eq!(node, &a);
    assert_eq!(ref_names(pods), names(&db));
    assert_eq!(pdbs, &[format!("{}/db", c.ns.name)]);
    let message = err.to_string();
    assert!(message.contains(&format!("{}/{}", c.ns.name, names(&db)[0])), "{message}");
    assert!(message.contains(&format!("PodDisruptionBudget {}/db", c.ns.name)), "{message}");
    assert_eq!(err.kind(), "DrainTimeout");

    assert!(c.node(&a).await.is_some(), "a node whose drain failed must stay");
    assert!(c.is_cordoned(&a).await);
    assert_eq!(names(&c.running_on(&a, "db").await), names(&db), "the protected pod must still run");
}

#[tokio::test]
async fn with_force_the_pod_a_pdb_protects_is_deleted_once_the_deadline_has_passed() {
    let c = Cluster::new("drain-force").await;
    let a = c.node_name("a");
    let _a = create_nodes(env(), &c.ns.name, &[&a]).await;
    c.create(deployment("db", &c.ns.name, 1, json!({}))).await;
    let db = c.wait_running_on(&a, "db", 1).await;
    c.blocking_pdb("db", 1).await;

    let started = std::time::Instant::now();
    let forced = DrainPolicy { force: true, ..policy(2_000) };
    let report = drain::drain(&controller().await, &a, &forced, Timestamp::now(), &CancellationToken::new())
        .await
        .expect("a forced drain completes");

    assert!(started.elapsed() >= Duration::from_secs(2), "forced before the deadline");
    assert!(report.evicted.is_empty());
    assert_eq!(ref_names(&report.force_deleted), names(&db));
    let victim = names(&db)[0].clone();
    eventually("the force-deleted pod gone", WAIT, || async {
        c.pods().get_opt(&victim).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(c.node(&a).await.is_some(), "the drain never deletes the node");
}

#[tokio::test]
async fn a_drain_cancelled_midway_and_called_again_with_the_same_start_completes() {
    let c = Cluster::new("drain-resume").await;
    let a = c.node_name("a");
    let _a = create_nodes(env(), &c.ns.name, &[&a]).await;
    c.create(deployment("db", &c.ns.name, 1, json!({}))).await;
    let db = c.wait_running_on(&a, "db", 1).await;
    c.blocking_pdb("db", 1).await;

    let client = controller().await;
    let started_at = Timestamp::now();
    let cancel = CancellationToken::new();
    let first = {
        let (client, a, cancel) = (client.clone(), a.clone(), cancel.clone());
        tokio::spawn(async move { drain::drain(&client, &a, &policy(20_000), started_at, &cancel).await })
    };
    // Midway: the node is cordoned and the PDB holds the pod, so the drain is looping on refused evictions.
    eventually("the first drain cordoned the node", WAIT, || async { c.is_cordoned(&a).await.then_some(()) }).await;
    cancel.cancel();
    // Left running, this drain could only end at its 20 s deadline, in a Timeout.
    let first = first.await.expect("drain task");
    assert!(matches!(first, Err(DrainError::Cancelled { .. })), "{first:?}");
    assert_eq!(names(&c.running_on(&a, "db").await), names(&db));

    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.admin.clone(), &c.ns.name);
    pdbs.patch("db", &PatchParams::default(), &Patch::Merge(json!({"spec": {"maxUnavailable": 1}}))).await.unwrap();

    let report = drain::drain(&client, &a, &policy(20_000), started_at, &CancellationToken::new())
        .await
        .expect("the resumed drain completes");
    assert!(!report.cordoned_by_us, "the node was cordoned by the first call already");
    assert_eq!(ref_names(&report.evicted), names(&db));
    assert!(c.any_on(&a).await.is_empty());
}

#[tokio::test]
async fn a_drain_resumed_after_its_original_deadline_times_out_before_evicting_anything() {
    let c = Cluster::new("drain-late").await;
    let a = c.node_name("a");
    let _a = create_nodes(env(), &c.ns.name, &[&a]).await;
    // No PDB: a drain that started its deadline over would evict this pod in its first round and succeed.
    c.create(deployment("web", &c.ns.name, 1, json!({}))).await;
    let web = c.wait_running_on(&a, "web", 1).await;

    let long_ago = Timestamp::now() - jiff::SignedDuration::from_secs(120);
    let err = drain::drain(&controller().await, &a, &policy(60_000), long_ago, &CancellationToken::new())
        .await
        .expect_err("past its deadline");
    let DrainError::Timeout { ref pods, .. } = err else { panic!("expected a timeout, got {err}") };
    assert_eq!(ref_names(pods), names(&web));
    let still = c.running_on(&a, "web").await;
    assert_eq!(names(&still), names(&web), "the pod was evicted");
    assert_eq!(still[0].metadata.uid, web[0].metadata.uid);
}

#[tokio::test]
async fn a_bare_pod_fails_the_drain_untouched_unless_the_policy_allows_evicting_it() {
    let c = Cluster::new("drain-bare").await;
    let a = c.node_name("a");
    let _a = create_nodes(env(), &c.ns.name, &[&a]).await;
    c.create::<Pod>(object(json!({
        "metadata": {"name": "solo", "labels": {"app": "solo"}},
        "spec": pod_spec(&c.ns.name, json!({})),
    })))
    .await;
    c.wait_running_on(&a, "solo", 1).await;
    let client = controller().await;

    let err = drain::drain(&client, &a, &policy(5_000), Timestamp::now(), &CancellationToken::new())
        .await
        .expect_err("a bare pod must not be lost silently");
    let DrainError::UnmanagedPods { ref pods, .. } = err else { panic!("expected UnmanagedPods, got {err}") };
    assert_eq!(ref_names(pods), ["solo"]);
    assert_eq!(names(&c.running_on(&a, "solo").await), ["solo"], "nothing is evicted when the drain refuses");

    let lenient = DrainPolicy { evict_bare_pods: true, ..policy(20_000) };
    let report = drain::drain(&client, &a, &lenient, Timestamp::now(), &CancellationToken::new())
        .await
        .expect("allowed to evict bare pods");
    assert_eq!(ref_names(&report.evicted), ["solo"]);
    assert!(c.any_on(&a).await.is_empty());
}

#[tokio::test]
async fn cordon_reports_whether_it_changed_the_node_and_false_for_an_operators_cordon() {
    let c = Cluster::new("drain-cordon").await;
    let (a, b) = (c.node_name("a"), c.node_name("b"));
    let _nodes = create_nodes(env(), &c.ns.name, &[&a, &b]).await;
    let client = controller().await;

    assert!(drain::cordon(&client, &a).await.expect("cordon"), "a schedulable node is cordoned by us");
    assert!(c.is_cordoned(&a).await);
    assert!(!drain::cordon(&client, &a).await.expect("cordon again"), "a second cordon changes nothing");

    c.set_unschedulable(&b, true).await;
    assert!(!drain::cordon(&client, &b).await.expect("cordon"), "an operator's cordon is not ours to undo");

    let missing = c.node_name("missing");
    let err = drain::cordon(&client, &missing).await.expect_err("no such node");
    assert!(matches!(err, DrainError::NodeNotFound { .. }), "{err}");
}

/// `uncordon` takes only a name, so it cannot act on a stale copy of the Node; whether the controller
/// decides to call it from a stale copy of its own record is a controller-level test.
#[tokio::test]
async fn uncordon_makes_a_cordoned_node_schedulable_and_ignores_a_node_that_is_gone() {
    let c = Cluster::new("drain-uncordon").await;
    let a = c.node_name("a");
    let _a = create_nodes(env(), &c.ns.name, &[&a]).await;
    let client = controller().await;

    c.set_unschedulable(&a, true).await;
    assert!(c.is_cordoned(&a).await);

    drain::uncordon(&client, &a).await.expect("uncordon");
    assert!(!c.is_cordoned(&a).await, "the node must be schedulable again");

    drain::uncordon(&client, &c.node_name("missing")).await.expect("uncordoning a node that is gone is a no-op");
}
