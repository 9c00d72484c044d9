//! Command-line arguments. Every flag can also come from an environment variable, so the Deployment
//! can be configured either way.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "vpsie-autoscaler", version, about = "Kubernetes node autoscaler and rebalancer for the VPSie cloud")]
pub struct Cli {
    /// Log output format.
    #[arg(long, env = "VPSIE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (e.g. `info,vpsie_autoscaler=debug`).
    #[arg(long, env = "VPSIE_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Serve the VPSie API simulator (the real HTTP dialect, with a fault-injection admin API under /_sim/).
    Sim(SimArgs),
    /// Print the rebalance analysis of the cluster without acting: candidates, replacements, USD/h saved,
    /// and why every other node is not a candidate.
    Plan(PlanArgs),
    /// Collect the escalation bundle of the runbooks into a directory: NodeGroups, VPSieNodes and
    /// Rebalances with status, the Lease holder, our recent Events, nodes (cordoned ones flagged),
    /// pending pods, the leader's metrics and VPSie API reachability, with a summary. No credentials.
    Diagnose(DiagnoseArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DiagnoseArgs {
    /// Directory to write the bundle to (created); defaults to ./vpsie-diagnose-<UTC time>.
    #[arg(long, env = "VPSIE_DIAGNOSE_OUT", default_value_os_t = crate::diagnose::default_out())]
    pub out: PathBuf,
    /// The leader's metrics URL; by default the holder of the Lease is asked through the API server's
    /// pod proxy on the port of --metrics-addr.
    #[arg(long, env = "VPSIE_DIAGNOSE_METRICS_URL")]
    pub metrics_url: Option<String>,
    /// How far back to collect Events.
    #[arg(long, env = "VPSIE_DIAGNOSE_SINCE", default_value = "3h", value_parser = parse_duration)]
    pub since: std::time::Duration,
    /// Cluster, Lease and VPSie credentials, named as `run` names them.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug, Clone)]
pub struct PlanArgs {
    /// Output format.
    #[arg(long, short = 'o', env = "VPSIE_PLAN_OUTPUT", value_enum, default_value_t = PlanOutput::Table)]
    pub output: PlanOutput,
    /// Cluster, config and VPSie credentials, read as `run` reads them.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanOutput {
    Table,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to serve the simulated VPSie API on.
    #[arg(long, env = "VPSIE_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Simulator config (YAML or JSON: seed, clusters, timings, time_scale, tokens); defaults otherwise.
    #[arg(long, env = "VPSIE_SIM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Real seconds per virtual second (0.01 runs the world 100x faster); overrides the config file.
    #[arg(long, env = "VPSIE_SIM_TIME_SCALE")]
    pub time_scale: Option<f64>,
    /// Kubeconfig of a cluster in which to register a KWOK-managed Node when a worker joins, as VPSie's
    /// own join would, and to remove it when the worker is gone.
    #[arg(long, env = "VPSIE_SIM_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Controller config file (YAML); without it the runbook's safe defaults apply.
    #[arg(long, env = "VPSIE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kubeconfig to use instead of the in-cluster configuration.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "VPSIE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Name of the leader-election Lease.
    #[arg(long, env = "VPSIE_LEASE_NAME", default_value = "vpsie-autoscaler")]
    pub lease_name: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "VPSIE_LEASE_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// Identity of this replica in the Lease; defaults to the host name (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a leader's claim lasts without renewal.
    #[arg(long, env = "VPSIE_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: std::time::Duration,
    /// A leader that could not renew for this long steps down (and the process exits).
    #[arg(long, env = "VPSIE_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub lease_renew_deadline: std::time::Duration,
    /// Pause between leader-election attempts.
    #[arg(long, env = "VPSIE_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub lease_retry_period: std::time::Duration,
    /// VPSie API base URL (scheme and host); the Secret's `url` key overrides it.
    #[arg(long, env = "VPSIE_API_URL", default_value = "https://api.vpsie.com")]
    pub vpsie_url: String,
    /// Secret holding the VPSie credentials (`token`/`apiKey`, or `clientId` + `clientSecret`).
    #[arg(long, env = "VPSIE_SECRET_NAME", default_value = "vpsie-secret")]
    pub vpsie_secret: String,
    /// Namespace of that Secret.
    #[arg(long, env = "VPSIE_SECRET_NAMESPACE", default_value = "kube-system")]
    pub vpsie_secret_namespace: String,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::crd::duration::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn all_args(cmd: &clap::Command) -> Vec<(String, Option<String>)> {
        let mut out: Vec<_> = cmd
            .get_arguments()
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
            .map(|a| {
                (format!("{} {}", cmd.get_name(), a.get_id()), a.get_env().map(|e| e.to_string_lossy().into_owned()))
            })
            .collect();
        for sub in cmd.get_subcommands() {
            out.extend(all_args(sub));
        }
        out
    }

    #[test]
    fn every_flag_can_also_come_from_an_environment_variable() {
        let args = all_args(&Cli::command());
        assert!(args.len() >= 10, "{args:?}");
        let missing: Vec<_> = args.iter().filter(|(_, env)| env.is_none()).collect();
        assert!(missing.is_empty(), "flags without env: {missing:?}");
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_bad_duration_flag_is_refused_with_the_text_quoted() {
        let err = Cli::try_parse_from(["vpsie-autoscaler", "run", "--lease-duration", "15"]).unwrap_err().to_string();
        assert!(err.contains("`15`"), "{err}");
    }
}
