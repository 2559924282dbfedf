//! The `pagoda` binary.

mod api_error;
mod auth;
mod bench_cmd;
mod chat;
mod cli;
mod completions;
mod generate_cmd;
mod generation;
mod health;
mod models;
mod routes;
mod serve_cmd;
mod state;
mod stop_strings;

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
        cli::Command::Serve(args) => serve_cmd::run(args),
    }
}
