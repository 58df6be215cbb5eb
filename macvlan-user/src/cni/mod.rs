//! `mvnet-cni`: mvnet as a CNI plugin (spec 1.1.0), so that Podman,
//! containerd, CRI-O and Kubernetes containers are counted, verified and
//! enforced by the classifier like mvnet's own.
//!
//! * [`spec`] — versions, environment, error codes (what `skel` checks);
//! * [`config`] — the network configuration on stdin;
//! * [`result`] — results in the format of each spec version;
//! * [`sandbox`] — the container's interface and its parent;
//! * [`chained`] — after the `macvlan` plugin: register what it made;
//! * [`standalone`] — `master` given: make the macvlan, IPAM delegated;
//! * [`delegate`] — running another plugin (IPAM) from CNI_PATH;
//! * [`host_local`] — host-local's ADD and DEL in-process, in its format.
//!
//! Every verb goes through the reconciling core's foreign records, under
//! the state lock, so parallel ADDs and DELs serialise.
pub mod chained;
pub mod config;
pub mod delegate;
pub mod host_local;
pub mod result;
pub mod sandbox;
pub mod spec;
pub mod standalone;

use std::path::Path;

use serde_json::Value;

use config::{NetConf, Role};
use spec::{CniError, CniResult, Code, Command, Env, Version};

/// What one call answers: JSON for stdout on success (none for DEL, CHECK,
/// STATUS and GC), or an error and the cniVersion to print it with.
#[derive(Debug)]
pub enum Outcome {
    Ok(Option<Value>),
    Err { error: CniError, version: String },
}

impl Outcome {
    /// What to print on stdout, and the exit code.
    pub fn render(&self) -> (Option<String>, u8) {
        match self {
            Outcome::Ok(None) => (None, 0),
            Outcome::Ok(Some(v)) => (Some(v.to_string()), 0),
            Outcome::Err { error, version } => (Some(error.to_json(version).to_string()), 1),
        }
    }
}

/// Runs one CNI call: the environment and stdin as a runtime passes them.
pub fn call(env: &Env, stdin: &[u8]) -> Outcome {
    let mut version = spec::CURRENT_VERSION.to_owned();
    match dispatch(env, stdin, &mut version) {
        Ok(v) => Outcome::Ok(v),
        Err(error) => Outcome::Err { error, version },
    }
}

fn dispatch(env: &Env, stdin: &[u8], version: &mut String) -> CniResult<Option<Value>> {
    if env.command.is_empty() {
        return Err(CniError::new(
            Code::InvalidEnvironment,
            "required env variables [CNI_COMMAND] missing",
        ));
    }
    if env.command == "VERSION" {
        return Ok(Some(spec::version_info()));
    }
    env.check_required(&env.command)?;
    let raw = config::decode(stdin)?;
    let declared = config::version_of(&raw);
    if !declared.is_empty() {
        *version = declared;
    }
    let command = Command::parse(&env.command);
    if command.is_none_or(Command::per_attachment) {
        spec::validate_network_name(raw.get("name").and_then(Value::as_str).unwrap_or(""))?;
        spec::validate_container_id(&env.container_id)?;
        spec::validate_ifname(&env.ifname)?;
    }
    let conf = config::parse(raw)?;
    let Some(command) = command else {
        return Err(CniError::new(
            Code::InvalidEnvironment,
            format!("unknown CNI_COMMAND: {}", env.command),
        ));
    };
    let needs = |min: Version, what: &str| {
        if conf.version < min {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!("config version does not allow {what}"),
            ));
        }
        Ok(())
    };
    if (command.per_attachment() || command == Command::Gc) && !crate::sys::process::is_root() {
        return Err(CniError::new(
            Code::Mvnet,
            "mvnet-cni needs root (namespaces, links and BPF)",
        ));
    }
    match command {
        Command::Version => unreachable!("answered above"),
        Command::Add => match &conf.role {
            Role::Chained => chained::add(&conf, env).map(Some),
            Role::Standalone { .. } => standalone::add(&conf, env).map(Some),
        },
        Command::Del => match &conf.role {
            Role::Chained => chained::del(&conf, env).map(|()| None),
            Role::Standalone { .. } => standalone::del(&conf, env).map(|()| None),
        },
        Command::Check => {
            needs(Version(0, 4, 0), "CHECK")?;
            if conf.prev_result.is_none() {
                return Err(CniError::new(
                    Code::InvalidConfig,
                    "CHECK needs the prevResult of the ADD it checks",
                ));
            }
            chained::check(&conf, env)?;
            if let Role::Standalone { ipam, .. } = &conf.role {
                // The addresses are still the IPAM plugin's for this
                // attachment.
                delegate::ipam(env, ipam, "CHECK", &conf.raw)?;
            }
            Ok(None)
        }
        Command::Gc => {
            needs(Version(1, 1, 0), "GC")?;
            chained::gc(&conf, env).map(|()| None)
        }
        Command::Status => {
            needs(Version(1, 1, 0), "STATUS")?;
            status(&conf).map(|()| None)
        }
    }
}

/// STATUS: whether mvnet can work here: root, its state directory (checked
/// as mvnet's readers check it, changing nothing; a missing one is made by
/// the first ADD), bpffs (mounted if absent, as every mvnet command does).
fn status(conf: &NetConf) -> CniResult<()> {
    let unavailable = |msg: String| Err(CniError::new(Code::PluginNotAvailable, msg));
    if !crate::sys::process::is_root() {
        return unavailable("mvnet-cni needs root (namespaces, links and BPF)".into());
    }
    if let Err(e) = crate::state_dir::StateDir::open_existing(&conf.state_dir) {
        return unavailable(format!(
            "mvnet's state directory {} is not usable: {e:#}",
            conf.state_dir.display()
        ));
    }
    if let Err(e) = crate::datapath::pinned::ensure_bpffs() {
        return unavailable(format!("{e}"));
    }
    Ok(())
}

/// The `mvnet-cni` binary: reads the environment and stdin, prints the
/// result or the error, returns the exit code.
pub fn main() -> u8 {
    use std::io::{Read as _, Write as _};
    crate::netlink::connections::one_shot();
    let env = Env::read(|k| std::env::var(k).ok());
    let mut stdin = Vec::new();
    if env.command != "VERSION" || !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            let error = CniError::new(Code::Io, format!("reading stdin: {e}"));
            return print(&Outcome::Err {
                error,
                version: spec::CURRENT_VERSION.into(),
            });
        }
    }
    let outcome = call(&env, &stdin);
    let code = print(&outcome);
    let _ = std::io::stdout().flush();
    code
}

fn print(outcome: &Outcome) -> u8 {
    let (out, code) = outcome.render();
    if let Some(out) = out {
        println!("{out}");
    }
    code
}

/// Whether `path` names the namespace an ADD was given (for DEL after the
/// sandbox is gone: nothing of it is needed).
pub fn netns_exists(path: &str) -> bool {
    !path.is_empty() && Path::new(path).exists()
}
