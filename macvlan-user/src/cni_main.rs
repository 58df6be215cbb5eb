//! `mvnet-cni`: the CNI plugin. Runtimes call it with CNI_COMMAND and the
//! network config on stdin; see [`mvnet::cni`].
use std::process::ExitCode;

fn main() -> ExitCode {
    // Errors go to stdout as CNI JSON; stderr only carries log lines.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    ExitCode::from(mvnet::cni::main())
}
