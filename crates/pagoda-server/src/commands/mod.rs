//! The `pagoda` command line: its arguments and config file, and the
//! commands `serve` (the HTTP server), `generate` (one prompt, in process),
//! `bench` (the engine's throughput, in process) and `quality` (what a
//! precision setting costs in next-token distributions).

pub(crate) mod bench;
pub(crate) mod cli;
pub(crate) mod config_file;
pub(crate) mod generate;
pub(crate) mod logging;
pub(crate) mod quality;
pub(crate) mod serve;

/// Parses the command line (and the config file), sets up logging and runs
/// the command.
pub(crate) fn run() -> anyhow::Result<()> {
    let cli = config_file::parse_cli()?;
    let format = match &cli.command {
        cli::Command::Serve(args) => args.log_format,
        _ => cli::LogFormat::Text,
    };
    logging::init(format);
    match cli.command {
        cli::Command::Generate(args) => generate::run(args),
        cli::Command::Bench(args) => bench::run(args),
        cli::Command::Serve(args) => serve::run(*args),
        cli::Command::Quality(args) => quality::run(args),
    }
}
