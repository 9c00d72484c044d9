use clap::Parser;
use vpsie_autoscaler::{
    cli::{Cli, Command},
    crd, run, telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Exactly one rustls provider is compiled in; installing it explicitly keeps kube and reqwest agreeing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Crd => {
            print!("{}", crd::all_yaml()?);
            Ok(())
        }
        Command::Run(args) => {
            telemetry::init(cli.log_format, &cli.log_level)?;
            run::run(args).await
        }
        Command::Plan(args) => {
            telemetry::init(cli.log_format, &cli.log_level)?;
            vpsie_autoscaler::rebalance::plan::plan(args).await
        }
        Command::Diagnose(args) => {
            telemetry::init(cli.log_format, &cli.log_level)?;
            vpsie_autoscaler::diagnose::diagnose(args).await
        }
        Command::Sim(args) => {
            telemetry::init(cli.log_format, &cli.log_level)?;
            run::sim(args).await
        }
    }
}
