use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = zkfire::cli::Cli::parse();
    match zkfire::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zkfire: {e:#}");
            ExitCode::FAILURE
        }
    }
}
