use std::process::ExitCode;

use clap::Parser as _;
use mvnet::cli::{self, Cli};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match cli::run(Cli::parse()) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        // The reader of our output went away (`mvnet network ls | head -1`):
        // nothing left to say, and nobody to say it to.
        Err(e) if cli::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mvnet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
