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
pub mod hooks;
pub mod monitor;
pub mod pinned;
mod striped;
mod tx_seen;
pub use crate::sys::bpf as sys;

use aya::{
    programs::{tc, SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode},
    Ebpf, EbpfLoader,
};
use direct::DirectIndex;
use macvlan_common::{
    endpoint_map_sizes, map_names, program_names, stripes as striped_layout, DEFAULT_ENDPOINTS,
    MAX_ENDPOINTS,
};
use thiserror::Error;

pub use classifier::Classifier;
pub use counters::{endpoint_counters, CounterSnapshot, VerdictTable};
pub use endpoints::{EndpointEntry, EndpointTable, Resynced};
pub use striped::stripes;

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
    #[error("all {0} endpoint slots of this parent's classifier are in use (its --max-endpoints is {0}); remove an endpoint, or remove the parent's networks and create them again with a larger --max-endpoints (up to 65536)")]
    Full(u32),
    #[error("--max-endpoints {0} is out of range; give a capacity from 1 to 65536 (default 4096)")]
    Capacity(u32),
    #[error("{0}")]
    Pin(String),
    #[error("{0}")]
    Device(String),
}

/// The direct endpoint index over `map` (ENDPOINT_INDEX), if the object
/// has one: pins made by an older mvnet have none, and their programs look
/// up the hash only.
/// Whether a map operation failed only because the key is not there
/// (aya reports a lookup's as `KeyNotFound`, a delete's as ENOENT).
pub(crate) fn not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

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

/// Loads the classifier object (not attached) with the default endpoint
/// capacity: what BPF_PROG_TEST_RUN tests and benchmarks drive directly.
pub fn load() -> Result<Ebpf, DatapathError> {
    load_with_capacity(DEFAULT_ENDPOINTS)
}

/// Loads the classifier object with room for `capacity` endpoints (1 to
/// [`MAX_ENDPOINTS`]): the per-endpoint maps get that many entries
/// (ENDPOINT_STATS that many per possible CPU, see [`stripes`]), and the
/// program learns the stripe length from its global.
pub fn load_with_capacity(capacity: u32) -> Result<Ebpf, DatapathError> {
    check_capacity(capacity)?;
    let stripes = stripes()?;
    let mut loader = EbpfLoader::new();
    for (name, entries) in endpoint_map_sizes(capacity, stripes) {
        loader.map_max_entries(name, entries);
    }
    loader.override_global(striped_layout::CAPACITY_GLOBAL, &capacity, true);
    let source_words = macvlan_common::direct::source_words(capacity);
    loader.override_global(
        macvlan_common::direct::SOURCE_WORDS_GLOBAL,
        &source_words,
        true,
    );
    Ok(loader.load(object())?)
}

/// Refuses an endpoint capacity outside 1..=[`MAX_ENDPOINTS`].
pub fn check_capacity(capacity: u32) -> Result<(), DatapathError> {
    if (1..=MAX_ENDPOINTS).contains(&capacity) {
        Ok(())
    } else {
        Err(DatapathError::Capacity(capacity))
    }
}

/// The endpoint capacity a classifier was loaded with, from the
/// `max_entries` of its ENDPOINT_STATS (`map`), which the kernel keeps
/// with the map: one stripe per possible CPU, or (pins made before the
/// stripes) a per-CPU array of one element per slot.
fn capacity_of(map: &aya::maps::Map) -> Result<u32, DatapathError> {
    let name = map_names::ENDPOINT_STATS;
    let entries = batch::map_data(map)
        .info()
        .map(|i| i.max_entries())
        .map_err(|source| DatapathError::Map { name, source })?;
    match map {
        aya::maps::Map::Array(_) => Ok(entries / stripes()?),
        _ => Ok(entries),
    }
}

/// The endpoint table of a loaded (not necessarily attached) object.
pub fn endpoint_table(ebpf: &mut Ebpf) -> Result<EndpointTable<'_>, DatapathError> {
    let index = direct_index(ebpf.map(map_names::ENDPOINT_INDEX))?;
    let stats = map_names::ENDPOINT_STATS;
    let capacity = capacity_of(ebpf.map(stats).ok_or(DatapathError::MissingMap(stats))?)?;
    let name = map_names::ENDPOINTS;
    EndpointTable::new(
        ebpf.map_mut(name).ok_or(DatapathError::MissingMap(name))?,
        index,
        capacity,
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
