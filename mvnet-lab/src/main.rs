use std::process::ExitCode;

use clap::Parser as _;
use mvnet_lab::cli::{self, Cli};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match cli::run(Cli::parse()) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("mvnet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
