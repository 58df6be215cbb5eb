//! The eBPF side, seen from the controller: the classifier of a root
//! device ([`Classifier`]: attached, pinned, opened again by every later
//! command, its endpoint table filled and its counters read), and the bare
//! object ([`load`]) for tests that run its programs directly.
mod batch;
mod classifier;
mod counters;
pub mod devices;
mod direct;
mod endpoints;
pub mod monitor;
pub mod pinned;
pub use crate::sys::bpf as sys;

use aya::{
    programs::{tc, SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode},
    Ebpf, EbpfLoader,
};
use direct::DirectIndex;
use macvlan_common::{map_names, program_names};
use thiserror::Error;

pub use classifier::Classifier;
pub use counters::{CounterSnapshot, VerdictTable};
pub use endpoints::{EndpointEntry, EndpointTable};

use crate::netns::NetnsError;

/// The classifier object, built by aya-build from `macvlan-ebpf`.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/macvlan"))
}

#[derive(Debug, Error)]
pub enum DatapathError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("loading the classifier failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the classifier object")]
    MissingMap(&'static str),
    #[error("attaching XDP ({mode:?}) to {iface} failed: {source}; try `--xdp-mode generic` if the driver has no native XDP")]
    AttachXdp {
        iface: String,
        mode: XdpMode,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("attaching TC {direction} to {iface} failed: {source}")]
    AttachTc {
        iface: String,
        direction: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("all {0} endpoint slots of this parent are in use; remove an endpoint or use another parent")]
    Full(u32),
    #[error("{0}")]
    Pin(String),
}

/// The direct endpoint index over `map` (ENDPOINT_INDEX), if the object
/// has one: pins made by an older mvnet have none, and their programs look
/// up the hash only.
fn direct_index(map: Option<&aya::maps::Map>) -> Result<Option<DirectIndex>, DatapathError> {
    map.map(|m| DirectIndex::map(batch::map_data(m)))
        .transpose()
}

/// How XDP is attached (defined with the rest of the typed model).
pub use crate::model::XdpMode;

/// Which programs to attach.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttachOptions {
    pub xdp: Option<XdpMode>,
    pub tc: bool,
}

impl Default for AttachOptions {
    fn default() -> Self {
        Self {
            xdp: Some(XdpMode::Auto),
            tc: true,
        }
    }
}

/// Loads the classifier object (not attached): what BPF_PROG_TEST_RUN
/// tests and benchmarks drive directly.
pub fn load() -> Result<Ebpf, DatapathError> {
    Ok(EbpfLoader::new().load(object())?)
}

/// The endpoint table of a loaded (not necessarily attached) object.
pub fn endpoint_table(ebpf: &mut Ebpf) -> Result<EndpointTable<'_>, DatapathError> {
    let index = direct_index(ebpf.map(map_names::ENDPOINT_INDEX))?;
    let name = map_names::ENDPOINTS;
    EndpointTable::new(
        ebpf.map_mut(name).ok_or(DatapathError::MissingMap(name))?,
        index,
    )
}

pub(crate) fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or(DatapathError::Program {
        name,
        source: aya::programs::ProgramError::UnexpectedProgramType,
    })?;
    p.try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

/// Runs inside the root device's namespace.
pub(crate) fn attach_programs(
    ebpf: &mut Ebpf,
    iface: &str,
    options: AttachOptions,
) -> Result<Attached, DatapathError> {
    let mut attached = Attached::default();
    let mut xdp_mode = None;
    if let Some(mode) = options.xdp {
        let xdp: &mut Xdp = program(ebpf, program_names::XDP)?;
        xdp.load().map_err(|source| DatapathError::Program {
            name: program_names::XDP,
            source,
        })?;
        let try_attach = |xdp: &mut Xdp, m: XdpMode| {
            let aya_mode = match m {
                XdpMode::Generic => AyaXdpMode::Skb,
                _ => AyaXdpMode::Driver,
            };
            xdp.attach(iface, aya_mode)
                .map_err(|source| DatapathError::AttachXdp {
                    iface: iface.to_owned(),
                    mode: m,
                    source,
                })
        };
        let (m, id) = match mode {
            XdpMode::Auto => match try_attach(xdp, XdpMode::Native) {
                Ok(id) => (XdpMode::Native, id),
                Err(_) => (XdpMode::Generic, try_attach(xdp, XdpMode::Generic)?),
            },
            m => (m, try_attach(xdp, m)?),
        };
        xdp_mode = Some(m);
        attached.xdp = Some(id);
    }
    if options.tc {
        // Kernels before 6.6 have no tcx: TC programs hang off a clsact qdisc.
        // EEXIST (already there) is fine; on tcx kernels it is not needed.
        let _ = tc::qdisc_add_clsact(iface);
        for (name, direction, attach_type) in [
            (program_names::TC_INGRESS, "ingress", TcAttachType::Ingress),
            (program_names::TC_EGRESS, "egress", TcAttachType::Egress),
        ] {
            let p: &mut SchedClassifier = program(ebpf, name)?;
            p.load()
                .map_err(|source| DatapathError::Program { name, source })?;
            let id = p
                .attach(iface, attach_type)
                .map_err(|source| DatapathError::AttachTc {
                    iface: iface.to_owned(),
                    direction,
                    source,
                })?;
            attached.tc.push((name, id));
        }
    }
    attached.xdp_mode = xdp_mode;
    Ok(attached)
}

/// What [`attach_programs`] attached.
#[derive(Default)]
pub(crate) struct Attached {
    pub xdp_mode: Option<XdpMode>,
    pub xdp: Option<aya::programs::xdp::XdpLinkId>,
    pub tc: Vec<(&'static str, aya::programs::tc::SchedClassifierLinkId)>,
}
