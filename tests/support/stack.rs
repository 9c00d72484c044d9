//! The whole system for end-to-end tests: the VPSie simulator (registering KWOK Nodes in the control
//! plane as workers join) and one autoscaler replica running as its own ServiceAccount, both real
//! processes of our binary, stopped by a watchdog when the test binary exits.

use std::{
    collections::BTreeSet,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use serde_json::{Value, json};

use super::{REPO, TestEnv, env};

pub struct Stack {
    controller: std::sync::Mutex<(u32, Vec<String>)>,
    pub sim_url: String,
    pub metrics_url: String,
    pub cluster: String,
    pub datacenter: String,
    pub dir: PathBuf,
}

static STACK: OnceLock<Stack> = OnceLock::new();

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `cmd` and a watchdog that kills it once this test process is gone.
fn spawn_owned(mut cmd: Command, log: &PathBuf) -> u32 {
    let out = std::fs::File::create(log).unwrap();
    let child = cmd.stdout(Stdio::from(out.try_clone().unwrap())).stderr(Stdio::from(out)).spawn().expect("spawn");
    let pid = child.id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill {pid} 2>/dev/null; sleep 2; kill -9 {pid} 2>/dev/null",
        me = std::process::id()
    );
    let started = Command::new("setsid").args(["-f", "bash", "-c", &script]).status().expect("watchdog");
    assert!(started.success());
    // The child is reaped by the watchdog's kill; we never wait on it.
    std::mem::forget(child);
    pid
}

/// The shared stack of this test binary, started on first use with the given controller config.
pub fn stack(config_yaml: &str) -> &'static Stack {
    static SUPERVISOR: std::sync::Once = std::sync::Once::new();
    let s = STACK.get_or_init(|| start(env(), config_yaml, &Identity::default()));
    SUPERVISOR.call_once(|| {
        std::thread::spawn(move || supervise(s));
    });
    s
}

/// The Deployment's `restartPolicy: Always`: a controller that exits on its own (it does when it loses
/// its Lease, say while the API server restarts) is started again, as the kubelet would.
fn supervise(s: &'static Stack) {
    let mut restarts = 0;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let mut guard = s.controller.lock().unwrap_or_else(|p| p.into_inner());
        let (pid, args) = &mut *guard;
        if exited(*pid) {
            restarts += 1;
            *pid = spawn_controller(args, &s.dir, 900 + restarts);
        }
    }
}

/// Whether a child we never wait on has exited (it then lingers as a zombie, or is gone).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces.
        Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// Who the controller is: its ServiceAccount, Lease and credentials Secret. The default is what
/// deploy/manifests installs in kube-system; a Helm release in another namespace names its own.
#[derive(Clone, Debug)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
    pub lease: String,
    pub secret: String,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            namespace: "kube-system".into(),
            service_account: "vpsie-autoscaler".into(),
            lease: "vpsie-autoscaler".into(),
            secret: "vpsie-secret".into(),
        }
    }
}

/// Like [`stack`], with the controller running as `identity`; `before` runs once, before the start
/// (e.g. installing what creates that identity).
pub fn stack_as(config_yaml: &str, identity: &Identity, before: impl FnOnce()) -> &'static Stack {
    STACK.get_or_init(|| {
        before();
        start(env(), config_yaml, identity)
    })
}

/// A simulator process of our binary, stopped by a watchdog when the test binary exits.
pub struct SimProcess {
    pub url: String,
    pub cluster: String,
    pub datacenter: String,
}

/// Starts a simulator (logging to `dir/sim.log`), registering joined workers as KWOK Nodes when
/// `register_nodes`, and points the Secret kube-system/vpsie-secret at it, so every replica started
/// afterwards talks to this simulator.
pub fn start_sim(env: &TestEnv, dir: &Path, register_nodes: bool) -> SimProcess {
    start_sim_for(env, dir, register_nodes, &Identity::default())
}

/// [`start_sim`], writing the credentials Secret that `identity` names.
pub fn start_sim_for(env: &TestEnv, dir: &Path, register_nodes: bool, identity: &Identity) -> SimProcess {
    let sim_port = free_port();
    let url = format!("http://127.0.0.1:{sim_port}");
    // Test binaries share one control plane, and a simulator's identifiers, hostnames and ids follow from
    // its seed. Objects an earlier process left behind (another binary, or the same binary in an earlier
    // round of scripts/reliability) may still claim a worker identifier or a group id, so every process
    // draws its own seed; it is printed so that a failed run can be replayed with the same one.
    let seed = std::env::var("VPSIE_SIM_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        u64::from(std::process::id()).wrapping_mul(1_000_003).wrapping_add(u64::from(nanos)) % 1_000_000_007
    });
    eprintln!("simulator seed {seed} (replay with VPSIE_SIM_SEED={seed})");
    let config = dir.join("sim-config.json");
    std::fs::write(&config, json!({ "seed": seed }).to_string()).unwrap();
    let mut sim = Command::new(env!("CARGO_BIN_EXE_vpsie-autoscaler"));
    sim.args(["sim", "--listen", &format!("127.0.0.1:{sim_port}"), "--time-scale", "0.01", "--config"]).arg(&config);
    if register_nodes {
        sim.arg("--kubeconfig").arg(env.kubeconfig());
    }
    spawn_owned(sim, &dir.join("sim.log"));
    let state = wait_for_json(&format!("{url}/_sim/state"));
    let cluster = state["clusters"][0]["identifier"].as_str().expect("sim cluster identifier").to_string();
    let datacenter = state["clusters"][0]["datacenter"].as_str().expect("sim datacenter").to_string();

    // Credentials exactly as an operator provides them: a Secret the controller is pointed at.
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": identity.secret, "namespace": identity.namespace},
        "stringData": {"token": "sim-token", "url": url},
    });
    let path = dir.join("secret.json");
    std::fs::write(&path, secret.to_string()).unwrap();
    env.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    SimProcess { url, cluster, datacenter }
}

fn start(env: &TestEnv, config_yaml: &str, identity: &Identity) -> Stack {
    // Benchmarks read the logs afterwards, so they may name the directory.
    let dir = match std::env::var_os("VPSIE_STACK_DIR") {
        Some(base) => PathBuf::from(base).join(env!("CARGO_CRATE_NAME")),
        None => std::env::temp_dir().join(format!("vpsie-stack-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let SimProcess { url: sim_url, cluster, datacenter } = start_sim_for(env, &dir, true, identity);

    let config = dir.join("config.yaml");
    std::fs::write(&config, config_yaml).unwrap();
    let kubeconfig = env.kubeconfig_of(&dir, &identity.namespace, &identity.service_account);
    let metrics_port = free_port();
    let args: Vec<String> = [
        "run",
        "--metrics-addr",
        &format!("127.0.0.1:{metrics_port}"),
        "--lease-duration",
        "4s",
        "--lease-renew-deadline",
        "3s",
        "--lease-retry-period",
        "500ms",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--lease-name",
        &identity.lease,
        "--lease-namespace",
        &identity.namespace,
        "--vpsie-secret",
        &identity.secret,
        "--vpsie-secret-namespace",
        &identity.namespace,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let pid = spawn_controller(&args, &dir, 0);
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    wait_for_text(&metrics_url, "vpsie_autoscaler_leader 1");
    let _ = REPO;
    Stack { controller: std::sync::Mutex::new((pid, args)), sim_url, metrics_url, cluster, datacenter, dir }
}

fn spawn_controller(args: &[String], dir: &std::path::Path, generation: u32) -> u32 {
    let mut controller = Command::new(env!("CARGO_BIN_EXE_vpsie-autoscaler"));
    controller
        .args(args)
        .args(["--identity", &format!("e2e-{}-{generation}", std::process::id())])
        .env("VPSIE_LOG_LEVEL", "info,vpsie_autoscaler=debug")
        .env("VPSIE_AUTOSCALER_TEST_CRASH_FILE", dir.join("crash-at"));
    spawn_owned(controller, &dir.join(format!("controller-{generation}.log")))
}

fn get(url: &str) -> Option<String> {
    let out = Command::new("curl").args(["-sf", "--max-time", "2", url]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for_json(url: &str) -> Value {
    for _ in 0..200 {
        if let Some(Ok(v)) = get(url).map(|body| serde_json::from_str(&body)) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} never answered");
}

fn wait_for_text(url: &str, text: &str) {
    for _ in 0..300 {
        if get(url).is_some_and(|b| b.contains(text)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} never showed {text}");
}

impl Stack {
    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("controller-0.log")).unwrap_or_default()
    }

    /// Kills the controller as a crash would (SIGKILL: no lease release, nothing flushed) and starts a
    /// fresh replica, which must take the lease over once it expires and carry on from the API server.
    pub fn crash_and_restart_controller(&self, generation: u32) {
        let mut guard = self.controller.lock().unwrap();
        let (pid, args) = &mut *guard;
        Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        *pid = spawn_controller(args, &self.dir, generation);
    }

    /// Arms the controller's test crash point: it exits abruptly, once, right after recording `step` and
    /// before acting on it.
    pub fn arm_crash(&self, step: &str) {
        std::fs::write(self.dir.join("crash-at"), step).unwrap();
    }

    /// Holds any operation that reaches `step` (see the controller's `test_hooks`) until [`release`].
    pub fn arm_pause(&self, step: &str) {
        let _ = std::fs::remove_file(self.dir.join("crash-at.paused"));
        std::fs::write(self.dir.join("crash-at"), format!("pause:{step}")).unwrap();
    }

    /// As [`Stack::arm_pause`], for the objects of `namespace` only.
    pub fn arm_pause_in(&self, step: &str, namespace: &str) {
        self.arm_pause(&format!("{step}@{namespace}"));
    }

    /// Whether an operation is being held at the armed pause.
    pub fn paused(&self) -> bool {
        self.dir.join("crash-at.paused").exists()
    }

    /// Lets held operations go on.
    pub fn release(&self) {
        let _ = std::fs::remove_file(self.dir.join("crash-at"));
        let _ = std::fs::remove_file(self.dir.join("crash-at.paused"));
    }

    /// Hands leadership to a fresh replica: it starts, then the old one gets SIGTERM, which releases the
    /// Lease at once (a planned handover, as in a rolling update of the Deployment).
    pub fn handover(&self, generation: u32) {
        let mut guard = self.controller.lock().unwrap();
        let (pid, args) = &mut *guard;
        // The standby serves /metrics on a port of its own, as a second pod would; `metrics_url` keeps
        // naming the first replica's.
        let mut standby = args.clone();
        if let Some(i) = standby.iter().position(|a| a == "--metrics-addr") {
            standby[i + 1] = format!("127.0.0.1:{}", free_port());
        }
        let next = spawn_controller(&standby, &self.dir, generation);
        Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        *pid = next;
        *args = standby;
    }

    /// Crashes the control plane's kube-apiserver (SIGKILL) and starts it again after `down`, returning
    /// once it is ready: etcd keeps every object, and every client (the controller's watches, the
    /// Lease) must find its way back on its own.
    pub fn restart_apiserver(&self, down: Duration) {
        let env = super::env();
        env.settle_namespace_deletions();
        let state = &env.state_dir;
        let script = std::path::Path::new(super::REPO).join("testenv/restart.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(state)
            .arg("kube-apiserver")
            .arg(format!("{:.1}", down.as_secs_f64()))
            .output()
            .unwrap();
        assert!(out.status.success(), "restart.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Whether the armed crash point was reached (the controller removes the file as it exits).
    pub fn crash_fired(&self) -> bool {
        !self.dir.join("crash-at").exists()
    }

    /// Every controller generation's log, oldest first (what `kubectl logs` shows across restarts).
    pub fn controller_logs(&self) -> String {
        let mut logs: Vec<_> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("controller-")));
        logs.sort();
        logs.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect::<Vec<_>>().join("\n")
    }

    pub fn sim_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sim.log")).unwrap_or_default()
    }

    /// The simulator's full state (clusters, groups, workers with their states).
    pub async fn sim_state(&self) -> Value {
        reqwest::get(format!("{}/_sim/state", self.sim_url)).await.unwrap().json().await.unwrap()
    }

    /// Workers of the simulator that are not gone, as (identifier, hostname, phase).
    pub async fn live_workers(&self) -> Vec<(String, String, String)> {
        let state = self.sim_state().await;
        state["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| {
                let field = |k: &str| w[k].as_str().unwrap_or_default().to_string();
                (field("identifier"), field("hostname"), field("phase").to_ascii_lowercase())
            })
            .filter(|(_, _, phase)| phase != "gone")
            .collect()
    }

    /// Whether the worker is gone or being deleted (nothing of it will keep running or billing).
    pub async fn worker_released(&self, identifier: &str) -> bool {
        !self.live_workers().await.iter().any(|(id, _, phase)| id == identifier && phase != "deleting")
    }

    /// Accrued spend of the simulated account.
    pub async fn cost(&self) -> Value {
        self.sim_state().await["cost"].clone()
    }

    pub async fn add_fault(&self, rule: Value) -> u64 {
        let resp =
            reqwest::Client::new().post(format!("{}/_sim/faults", self.sim_url)).json(&rule).send().await.unwrap();
        assert!(resp.status().is_success(), "fault rule refused: {}", resp.text().await.unwrap_or_default());
        let v: Value = resp.json().await.unwrap();
        v["id"].as_u64().unwrap_or_default()
    }

    /// Adds a fault rule that is removed when the guard drops, pass or fail, so that a failed assertion does
    /// not leave the fault in place for the tests that run next.
    pub async fn fault(&self, rule: Value) -> Undo {
        let id = self.add_fault(rule).await;
        Undo(vec!["-X".into(), "DELETE".into(), format!("{}/_sim/faults/{id}", self.sim_url)])
    }

    /// Merges `patch` into the simulator's settings until the guard drops, then puts the old ones back.
    pub async fn settings(&self, patch: Value) -> Undo {
        let url = format!("{}/_sim/settings", self.sim_url);
        let old: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        let resp = reqwest::Client::new().put(&url).json(&patch).send().await.unwrap();
        assert!(resp.status().is_success(), "settings refused: {}", resp.text().await.unwrap_or_default());
        let restore = ["-X", "PUT", "-H", "content-type: application/json", "--data", &old.to_string(), &url];
        Undo(restore.iter().map(|s| s.to_string()).collect())
    }

    /// Identifiers of every worker the simulator ever created, gone or not.
    pub async fn worker_ids(&self) -> BTreeSet<String> {
        let state = self.sim_state().await;
        let workers = state["workers"].as_array().cloned().unwrap_or_default();
        workers.iter().filter_map(|w| w["identifier"].as_str().map(String::from)).collect()
    }

    pub async fn clear_faults(&self) {
        reqwest::Client::new().delete(format!("{}/_sim/faults", self.sim_url)).send().await.unwrap();
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(&self.metrics_url).await.unwrap().text().await.unwrap()
    }

    /// One counter's value on `/metrics`: `series` is its name with its labels as exposed
    /// (`name_total{label="v"}`); 0 while the series is not exposed yet.
    pub async fn counter(&self, series: &str) -> u64 {
        let text = self.metrics().await;
        let prefix = format!("{series} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    /// The cheapest offering of the simulated catalogue, as the autoscaler's client sees it.
    pub async fn offerings(&self) -> Vec<vpsie_autoscaler::cloud::Offering> {
        use vpsie_autoscaler::cloud::{
            CloudProvider,
            vpsie::{Credentials, VpsieClient, VpsieConfig},
        };
        let client =
            VpsieClient::new(VpsieConfig::for_simulator(self.sim_url.clone()), Credentials::token("sim-token"))
                .expect("client");
        let mut all = client.offerings(&self.datacenter).await.expect("offerings");
        all.sort_by(|a, b| a.hourly_price.total_cmp(&b.hourly_price));
        all
    }
}

/// A change to the simulator, undone by the curl call with these arguments when dropped. Blocking on purpose:
/// `Drop` cannot await, and it also runs while a failed test unwinds.
#[must_use = "the change is undone as soon as the guard drops"]
pub struct Undo(Vec<String>);

impl Drop for Undo {
    fn drop(&mut self) {
        let _ = Command::new("curl").args(["-sf", "--max-time", "5"]).args(&self.0).output();
    }
}
