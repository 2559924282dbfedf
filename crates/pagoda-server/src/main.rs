//! The `pagoda` binary.

mod bench_cmd;
mod cli;
mod generate_cmd;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAGODA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        cli::Command::Generate(args) => generate_cmd::run(args),
        cli::Command::Bench(args) => bench_cmd::run(args),
    }
}
