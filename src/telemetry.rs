//! Logging through `tracing`, as plain text for people or JSON for log pipelines.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::cli::LogFormat;

pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)?;
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Plain => {
            registry.with(fmt::layer().with_target(false).with_ansi(std::io::stderr().is_terminal())).try_init()?
        }
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true)).try_init()?,
    }
    Ok(())
}
