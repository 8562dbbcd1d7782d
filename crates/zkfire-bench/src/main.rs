//! `zkfire-bench`: see the crate's README for the scenarios.

use clap::Parser;
use std::process::ExitCode;
use zkfire_bench::cli::{Cli, Resolved};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zkfire-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        // The run went through, but not one session came up.
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("zkfire-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ends the process if the run outlives every bound it was given (a bug, or
/// a wait without a deadline): load must never go on unattended.
fn watchdog(limit: std::time::Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!(
            "zkfire-bench: still running after {:.0} s, past every deadline; exiting",
            limit.as_secs_f64()
        );
        std::process::exit(3);
    });
}

/// Whether any session came up (always true for the relay).
async fn real_main(cli: Cli) -> anyhow::Result<bool> {
    match cli.resolve().await? {
        Resolved::Relay(opts) => {
            watchdog(opts.max_run + std::time::Duration::from_secs(30));
            zkfire_bench::relay::serve(opts).await?;
            Ok(true)
        }
        Resolved::Run(cfg) => {
            watchdog(cfg.hard_limit());
            let json = cfg.json.clone();
            let report = zkfire_bench::run::run(*cfg).await?;
            print!("{}", report.summary());
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report)?;
                std::fs::write(&path, text + "\n")
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            }
            Ok(report.sessions.up > 0)
        }
    }
}
