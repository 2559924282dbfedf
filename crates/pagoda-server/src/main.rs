//! The `pagoda` binary.

mod api_error;
mod auth;
mod bench_cmd;
mod chat;
mod chat_prompt;
mod cli;
mod completions;
mod config_file;
mod generate_cmd;
mod generation;
mod health;
mod inflight;
mod logging;
mod metrics;
mod models;
mod openapi;
mod output_grammar;
mod partial_match;
mod playground;
mod reasoning;
mod reasoning_parser;
mod routes;
mod serve_cmd;
mod sse;
mod state;
mod stop_strings;
#[cfg(test)]
mod template_fixtures;
mod tool_format;
mod tool_grammar;
mod tool_parser;

fn main() -> anyhow::Result<()> {
    let cli = config_file::parse_cli()?;
    let format = match &cli.command {
        cli::Command::Serve(args) => args.log_format,
        _ => cli::LogFormat::Text,
    };
    logging::init(format);
    match cli.command {
        cli::Command::Generate(args) => generate_cmd::run(args),
        cli::Command::Bench(args) => bench_cmd::run(args),
        cli::Command::Serve(args) => serve_cmd::run(*args),
    }
}
