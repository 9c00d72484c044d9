//! Test support for the end-to-end suites: one real control plane per test binary (or the one named by
//! `VPSIE_TESTENV`, a state directory made by `testenv/up.sh`), a namespace per test, and the
//! controller's own ServiceAccount token bound to the ClusterRole we ship.
//!
//! A control plane started here is stopped by a watchdog process when the test binary exits, however it
//! exits (a failed assertion, a panic, an abort), so no run leaves processes behind.

#![allow(dead_code)]

pub mod fixtures;
pub mod rebalance;
pub mod stack;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

pub struct TestEnv {
    pub state_dir: PathBuf,
    pub vars: BTreeMap<String, String>,
}

static ENV: OnceLock<TestEnv> = OnceLock::new();

/// The control plane of this test binary, started on first use.
pub fn env() -> &'static TestEnv {
    // reqwest is built without a default TLS provider; tests use the same one as the binary.
    let _ = rustls::crypto::ring::default_provider().install_default();
    ENV.get_or_init(|| {
        let state_dir = match std::env::var("VPSIE_TESTENV") {
            Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => start_own(),
        };
        let vars = read_env_file(&state_dir.join("env"));
        let env = TestEnv { state_dir, vars };
        env.install_project_objects();
        env
    })
}

fn start_own() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vpsie-testenv-{}", std::process::id()));
    let status =
        Command::new("bash").arg(format!("{REPO}/testenv/up.sh")).arg(&dir).status().expect("run testenv/up.sh");
    assert!(status.success(), "testenv/up.sh failed; see the logs it printed");
    // The watchdog outlives us by design: it waits for this process to end, then tears down.
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; bash {REPO}/testenv/down.sh {dir} >/dev/null 2>&1",
        pid = std::process::id(),
        dir = dir.display()
    );
    // `setsid -f` forks the watchdog into its own session and returns at once, so nothing is left to reap.
    let started =
        Command::new("setsid").args(["-f", "bash", "-c", &script]).status().expect("start the teardown watchdog");
    assert!(started.success(), "could not start the teardown watchdog");
    dir
}

fn read_env_file(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').replace("\\ ", " ")))
        .collect()
}

impl TestEnv {
    pub fn var(&self, key: &str) -> &str {
        self.vars.get(key).unwrap_or_else(|| panic!("{key} missing from the testenv env file"))
    }

    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.var("KUBECONFIG"))
    }

    pub fn kubectl_path(&self) -> &str {
        self.var("TESTENV_KUBECTL")
    }

    /// Runs kubectl as the admin; returns (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(self.kubectl_path())
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .output()
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Like [`kubectl`](Self::kubectl) but fails the test when kubectl fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args);
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    }

    /// Namespaces still being deleted. An API-server restart in the middle of a namespace deletion can end
    /// it without its custom objects (the namespace controller, finding the CRD not served yet, thinks
    /// there are none), leaving VPSieNodes in a namespace that no longer exists; a test that restarts the
    /// API server waits for earlier deletions first, so that it tests our controller and not that race.
    pub fn terminating_namespaces(&self) -> Vec<String> {
        let jsonpath = r#"{range .items[?(@.status.phase=="Terminating")]}{.metadata.name}{"\n"}{end}"#;
        let (_, out, _) = self.kubectl(&["get", "namespaces", "-o", &format!("jsonpath={jsonpath}")]);
        out.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
    }

    /// Waits (up to 5 min) until no namespace is being deleted, so that a test which disturbs the API
    /// server or the CRD strands nothing of an earlier test's namespace (see
    /// [`terminating_namespaces`](Self::terminating_namespaces)).
    pub fn settle_namespace_deletions(&self) {
        for _ in 0..600 {
            if self.terminating_namespaces().is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        panic!("namespaces still terminating after 5 min: {:?}", self.terminating_namespaces());
    }

    /// VPSieNodes whose namespace is gone ("namespace/name"): leftovers no later run may share a cluster
    /// with unnoticed, since they hold worker identifiers and VPSie group ids.
    pub fn stranded_vpsienodes(&self) -> Vec<String> {
        let (_, namespaces, _) = self.kubectl(&["get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}"]);
        let live: std::collections::BTreeSet<&str> = namespaces.split_whitespace().collect();
        let jsonpath = r#"{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}"#;
        let (_, nodes, _) = self.kubectl(&["get", "vpsienodes", "-A", "-o", &format!("jsonpath={jsonpath}")]);
        nodes
            .lines()
            .filter(|l| l.split_once('/').is_some_and(|(ns, _)| !live.contains(ns)))
            .map(str::to_string)
            .collect()
    }

    /// CRDs and the controller's RBAC, applied once per control plane (idempotent).
    fn install_project_objects(&self) {
        self.kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &format!("{REPO}/deploy/crds/crds.yaml"),
        ]);
        self.kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &format!("{REPO}/deploy/manifests/rbac.yaml"),
        ]);
        for crd in ["nodegroups", "vpsienodes", "rebalances"] {
            self.kubectl_ok(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{crd}.autoscaler.vpsie.com"),
            ]);
        }
    }

    pub async fn admin(&self) -> Client {
        client_from(&self.kubeconfig()).await
    }

    /// A kubeconfig holding a fresh token of ServiceAccount `kube-system/vpsie-autoscaler`, so the
    /// controller under test has exactly the rights of the shipped ClusterRole.
    pub fn controller_kubeconfig(&self, dir: &Path) -> PathBuf {
        self.kubeconfig_of(dir, "kube-system", "vpsie-autoscaler")
    }

    /// A kubeconfig holding a fresh token of ServiceAccount `namespace/account`.
    pub fn kubeconfig_of(&self, dir: &Path, namespace: &str, account: &str) -> PathBuf {
        let token = self.kubectl_ok(&["-n", namespace, "create", "token", account, "--duration=2h"]);
        let path = dir.join("controller.kubeconfig");
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "testenv", "cluster": {
                "server": self.var("TESTENV_API_URL"), "certificate-authority": self.var("TESTENV_CA_FILE")}}],
            "users": [{"name": "vpsie-autoscaler", "user": {"token": token.trim()}}],
            "contexts": [{"name": "controller", "context": {"cluster": "testenv", "user": "vpsie-autoscaler"}}],
            "current-context": "controller",
        });
        std::fs::write(&path, serde_saphyr::to_string(&kubeconfig).unwrap()).unwrap();
        path
    }

    /// A fresh namespace for one test, deleted (without waiting) when the guard drops, pass or fail.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let api: Api<Namespace> = Api::all(self.admin().await);
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &ns).await.expect("create namespace");
        TestNamespace { name, kubectl: self.kubectl_path().to_string(), kubeconfig: self.kubeconfig() }
    }

    /// Prints the tail of every component log; call it when a test is about to fail on the cluster.
    pub fn dump_logs(&self) {
        let dir = self.state_dir.join("logs");
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<_> = text.lines().rev().take(30).collect();
            eprintln!("==== {} ====", entry.path().display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A tool testenv/build.sh builds (`TESTENV_HELM`, `TESTENV_PROMTOOL`, ...), read from the env file it
/// prints; a warm call costs well under a second and starts no control plane.
pub fn built_tool(var: &str) -> String {
    let out = Command::new("bash").arg(format!("{REPO}/testenv/build.sh")).output().expect("run testenv/build.sh");
    assert!(out.status.success(), "testenv/build.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    let env_file = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    let text = std::fs::read_to_string(&env_file).unwrap_or_else(|e| panic!("{env_file}: {e}"));
    let prefix = format!("{var}=");
    let value = text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("{var} not in {env_file}"));
    value.trim_matches('\'').to_string()
}

pub async fn client_from(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kube config");
    vpsie_autoscaler::run::without_transparent_retries(&mut config);
    Client::try_from(config).expect("kube client")
}

pub struct TestNamespace {
    pub name: String,
    kubectl: String,
    kubeconfig: PathBuf,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new(&self.kubectl)
            .args(["delete", "namespace", &self.name, "--wait=false", "--ignore-not-found"])
            .env("KUBECONFIG", &self.kubeconfig)
            .output();
    }
}

/// A Node that KWOK manages (it makes it Ready and runs its pods), labelled for the test that owns it.
pub fn kwok_node(name: &str, owner: &str, cpu: &str, memory: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"kubernetes.io/hostname": name, "type": "kwok", "e2e-owner": owner},
        },
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
        },
    }))
    .unwrap()
}

/// Deletes the listed nodes when dropped (nodes are cluster-scoped, so namespaces do not clean them).
pub struct NodeGuard {
    pub names: Vec<String>,
    kubectl: String,
    kubeconfig: PathBuf,
}

impl NodeGuard {
    pub fn new(env: &TestEnv, names: Vec<String>) -> Self {
        Self { names, kubectl: env.kubectl_path().to_string(), kubeconfig: env.kubeconfig() }
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new(&self.kubectl)
                .args(["delete", "node", name, "--wait=false", "--ignore-not-found"])
                .env("KUBECONFIG", &self.kubeconfig)
                .output();
        }
    }
}

pub async fn create_nodes(env: &TestEnv, owner: &str, names: &[&str]) -> NodeGuard {
    let nodes: Api<Node> = Api::all(env.admin().await);
    for name in names {
        let _ = nodes.delete(name, &DeleteParams::default()).await;
        nodes.create(&PostParams::default(), &kwok_node(name, owner, "4", "8Gi")).await.expect("create node");
    }
    NodeGuard::new(env, names.iter().map(|s| s.to_string()).collect())
}

/// Polls `check` until it returns `Some`, or fails the test after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            env().dump_logs();
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
