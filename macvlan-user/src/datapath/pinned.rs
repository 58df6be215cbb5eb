//! The classifier as the control plane uses it: attached once per root
//! device and pinned in bpffs, so that it outlives the `mvnet` process that
//! attached it and every later `mvnet` command finds its maps.
//!
//! Pin layout (documented in the README for dashboard authors):
//!
//! ```text
//! /sys/fs/bpf/mvnet/<netns inode>-<root device>/
//!     ENDPOINTS ENDPOINT_STATS VLAN_STATS VERDICT_STATS CONFIG   maps
//!     (ENDPOINT_STATS: striped by CPU, see `macvlan_common::stripes`)
//!     VLAN_POLICY ENDPOINT_INDEX ENDPOINT_MISMATCH               maps
//!     ENDPOINT_MALFORMED ENDPOINT_DEVICES ENDPOINT_TX_INVALID    maps
//!     ENDPOINT_TX_INVALID_SEEN                                    map
//!     link_xdp link_tc_ingress link_tc_egress                    bpf_links
//!     prog_xdp prog_tc_endpoint                                  programs
//! ```
//!
//! On TC alone (`--xdp-mode auto` on a veth, see `hooks`) there is no
//! `link_xdp` and `prog_tc_ingress` stands in for `prog_xdp`.
//!
//! `prog_tc_endpoint` is attached to every endpoint's own device (see
//! `devices`); those attachments are not pinned: they go with the device.
//!
//! The network namespace inode keeps the `eth0` of two namespaces apart.
//! On kernels before 6.6 (no tcx) the TC programs hang off a clsact qdisc
//! as netlink filters, which need no pin to stay and are removed by name.
use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Map, MapData},
    programs::{links::FdLink, tc, SchedClassifier, TcAttachType, Xdp},
    util::KernelVersion,
};
use macvlan_common::{map_names, program_names, Config};

use super::{
    attach_programs, sys, AttachOptions, CounterSnapshot, DatapathError, EndpointTable, XdpMode,
};
use crate::netns::{self, NetNs};

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Our directory in bpffs.
pub const PIN_ROOT: &str = "/sys/fs/bpf/mvnet";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Slots whose share of a batch read of a per-CPU array costs about what
/// one lookup does (a lookup is a system call of about a microsecond; a
/// batch read takes about 0.45 µs per slot): past one flagged slot in this
/// many, [`PinnedMaps::tx_invalid_counts`] reads the whole array.
const BATCH_SLOTS_PER_LOOKUP: u64 = 2;

/// Pinned by every mvnet; ENDPOINT_INDEX and the maps after it, added
/// later, are optional (see `PinnedMaps::load`).
const MAPS: [&str; 12] = [
    map_names::ENDPOINTS,
    map_names::ENDPOINT_STATS,
    map_names::VLAN_STATS,
    map_names::VERDICT_STATS,
    map_names::CONFIG,
    map_names::VLAN_POLICY,
    map_names::ENDPOINT_INDEX,
    map_names::ENDPOINT_MISMATCH,
    map_names::ENDPOINT_MALFORMED,
    map_names::ENDPOINT_DEVICES,
    map_names::ENDPOINT_TX_INVALID,
    map_names::ENDPOINT_TX_INVALID_SEEN,
];
/// Maps a classifier pinned by an older mvnet may lack.
const OPTIONAL: [&str; 6] = [
    map_names::ENDPOINT_INDEX,
    map_names::ENDPOINT_MISMATCH,
    map_names::ENDPOINT_MALFORMED,
    map_names::ENDPOINT_DEVICES,
    map_names::ENDPOINT_TX_INVALID,
    map_names::ENDPOINT_TX_INVALID_SEEN,
];
/// The pinned bpf_links (tcx links only on kernels with tcx): the
/// programs can be replaced in place through them (`sys::link_update`).
pub const LINK_XDP: &str = "link_xdp";
/// The XDP program itself, pinned so `mvnet monitor` can find its log ring.
pub const PROG_XDP: &str = "prog_xdp";
/// The TC ingress program, pinned in place of [`PROG_XDP`] when the
/// classifier runs on TC alone (for `mvnet monitor`).
pub const PROG_TC_INGRESS: &str = "prog_tc_ingress";
pub const LINK_TC_INGRESS: &str = "link_tc_ingress";
/// The endpoint-device program (`mvnet_tc_endpoint`), loaded with the
/// classifier's maps and pinned so that every later `mvnet` attaches it
/// to a new endpoint's device without loading anything.
pub const PROG_TC_ENDPOINT: &str = "prog_tc_endpoint";
pub const LINK_TC_EGRESS: &str = "link_tc_egress";

/// Element `slot` of the per-CPU array `map` (named `name`), summed over
/// CPUs with `merge`.
fn per_cpu_slot<V: aya::Pod + Default>(
    map: &Map,
    name: &'static str,
    slot: u32,
    merge: impl Fn(&mut V, &V),
) -> Result<V, DatapathError> {
    let array: aya::maps::PerCpuArray<&MapData, V> = aya::maps::PerCpuArray::try_from(map)
        .map_err(|source| DatapathError::Map { name, source })?;
    let mut total = V::default();
    for c in array
        .get(&slot, 0)
        .map_err(|source| DatapathError::Map { name, source })?
        .iter()
    {
        merge(&mut total, c);
    }
    Ok(total)
}

/// Every entry of ENDPOINT_DEVICES (`map`), in one batched read.
fn device_entries(map: &Map) -> Result<Vec<(u32, macvlan_common::DeviceIdentity)>, DatapathError> {
    let name = map_names::ENDPOINT_DEVICES;
    let data = super::batch::map_data(map);
    let capacity = data
        .info()
        .map_err(|source| DatapathError::Map { name, source })?
        .max_entries();
    super::batch::hash_entries(data, name, capacity)
}

/// Whether the endpoint of device identity `id` is in `table` with the
/// identity's slot ([`PinnedMaps::prune_devices`] removes the others).
fn endpoint_lives(
    table: &super::endpoints::EndpointView<'_>,
    id: &macvlan_common::DeviceIdentity,
) -> bool {
    table.get(id.mac, id.vlan).map(|e| e.slot) == Some(id.slot)
}

fn io_err(what: &str, path: &Path, e: io::Error) -> DatapathError {
    DatapathError::Pin(format!("{what} {}: {e}", path.display()))
}

/// Mounts bpffs at [`BPFFS`] unless it is there already.
pub fn ensure_bpffs() -> Result<(), DatapathError> {
    if crate::sys::mount::fs_type(Path::new(BPFFS)).is_ok_and(|t| t == BPF_FS_MAGIC) {
        return Ok(());
    }
    let _ = fs::create_dir_all(BPFFS);
    if let Err(e) = crate::sys::mount::mount("bpf", Path::new(BPFFS), "bpf", 0) {
        return Err(DatapathError::Pin(format!(
            "bpffs is not mounted at {BPFFS} and mounting it failed ({e}); mount it with `mount -t bpf bpf {BPFFS}`"
        )));
    }
    Ok(())
}

/// Inode of the network namespace of the calling thread (or of `ns`).
pub fn netns_inode(ns: Option<&NetNs>) -> Result<u64, DatapathError> {
    let path = match ns {
        Some(ns) => ns.path().to_owned(),
        None => PathBuf::from("/proc/thread-self/ns/net"),
    };
    fs::metadata(&path)
        .map(|m| m.ino())
        .map_err(|e| io_err("stat", &path, e))
}

/// The pin directory of `root` in the namespace with inode `ino`.
pub fn pin_dir(ino: u64, root: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(format!("{ino}-{root}"))
}

/// The prefix of the mark in a pin directory that names the mvnet state
/// directory keeping the classifier: a directory (bpffs holds pins and
/// directories only), `state-` and a hash of the state directory's path.
/// Two state directories in one namespace would otherwise share a root's
/// pins without sharing a lock or a view of the endpoints: each one's
/// `restore` would remove the other's entries as stale, and its last
/// `network rm` would detach the other's classifier.
pub const OWNER_PREFIX: &str = "state-";

/// The owner mark of state directory `state_dir` ([`OWNER_PREFIX`]).
pub fn owner_mark(state_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let path = fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    // FNV-1a: stable across builds, unlike std's hasher.
    let hash = path
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{OWNER_PREFIX}{hash:016x}")
}

/// The owner mark in pin directory `dir`, if any (pins made before the
/// marks have none).
pub fn owner(dir: &Path) -> Option<String> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(OWNER_PREFIX))
}

/// Marks the classifier pinned in `dir` as kept by the state directory
/// whose mark is `mark`.
pub fn set_owner(dir: &Path, mark: &str) -> Result<(), DatapathError> {
    let path = dir.join(mark);
    match fs::create_dir(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("mkdir", &path, e)),
    }
}

/// Whether the classifier of this directory is attached, as the kernel
/// says: its maps are pinned, its pinned XDP link is attached to a device,
/// and (with tcx) both TC links to that same device. A classifier on TC
/// alone (`hooks::HookSet::TcOnly`, tcx only) has no XDP link pin: its TC
/// links then say which device. The XDP link is pinned before the TC
/// links, so TC links without it are never an interrupted XDP attach.
/// Map pins alone (an interrupted attach or detach) are not an attached
/// classifier.
pub fn is_attached(dir: &Path) -> bool {
    if !dir.join(map_names::ENDPOINTS).exists() {
        return false;
    }
    let tc_only = uses_tcx() && !dir.join(LINK_XDP).exists();
    let ifindex = if tc_only {
        tcx_link_ifindex(&dir.join(LINK_TC_INGRESS))
    } else {
        xdp_link_ifindex(&dir.join(LINK_XDP))
    };
    let Some(ifindex) = ifindex.filter(|&i| i != 0) else {
        return false;
    };
    !uses_tcx()
        || [LINK_TC_INGRESS, LINK_TC_EGRESS]
            .iter()
            .all(|name| tcx_link_ifindex(&dir.join(name)) == Some(ifindex))
}

/// Whether the pins in `dir` are left from a namespace that is gone: its
/// pinned XDP link (TC only: its TC ingress link) lost its device.
/// Namespace inodes are reused, so a new namespace can get the directory
/// of a dead one whose pins nobody removed (a test that failed before
/// `network rm`); taking those for an attached classifier would leave the
/// new root without one.
pub fn is_stale(dir: &Path) -> bool {
    match xdp_link_ifindex(&dir.join(LINK_XDP)) {
        Some(i) => i == 0,
        None => tcx_link_ifindex(&dir.join(LINK_TC_INGRESS)) == Some(0),
    }
}

/// The ifindex of the device the pinned tcx link at `path` is attached to
/// (0 once that device is gone), or `None` without a readable tcx link.
fn tcx_link_ifindex(path: &Path) -> Option<u32> {
    use std::os::fd::AsFd as _;
    let fd = sys::obj_get(path).ok()?;
    let info = sys::link_info(fd.as_fd()).ok()?;
    (info.kind == sys::BPF_LINK_TYPE_TCX).then_some(info.ifindex)
}

/// The ifindex of the device the pinned XDP link at `path` is attached to
/// (0 once that device is gone), or `None` without a readable XDP link.
fn xdp_link_ifindex(path: &Path) -> Option<u32> {
    use std::os::fd::AsFd as _;
    let fd = sys::obj_get(path).ok()?;
    let info = sys::link_info(fd.as_fd()).ok()?;
    (info.kind == sys::BPF_LINK_TYPE_XDP).then_some(info.ifindex)
}

/// Whether TC programs attach through tcx (bpf_link), as aya does from 6.6.
pub(crate) fn uses_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// Loads the classifier, attaches it to `root` (in the calling thread's
/// namespace) and pins maps and links under `dir`, with the default
/// endpoint capacity. Returns the XDP mode in use (`None`: TC alone). On
/// error nothing stays.
pub fn attach(root: &str, dir: &Path, xdp_mode: XdpMode) -> Result<Option<XdpMode>, DatapathError> {
    attach_hooks(root, dir, Some(xdp_mode), macvlan_common::DEFAULT_ENDPOINTS)
}

/// [`attach`], with XDP (`Some(mode)`) or without it (`None`: the TC
/// programs alone, which then count every frame; tests compare the two),
/// and room for `capacity` endpoints (`--max-endpoints`), which the pinned
/// maps' `max_entries` record from then on. `Some(XdpMode::Auto)` is TC
/// alone on a veth (see `hooks`). Returns the XDP mode in use, `None` for
/// TC alone.
pub fn attach_hooks(
    root: &str,
    dir: &Path,
    xdp_mode: Option<XdpMode>,
    capacity: u32,
) -> Result<Option<XdpMode>, DatapathError> {
    super::check_capacity(capacity)?;
    ensure_bpffs()?;
    if is_attached(dir) {
        return Err(DatapathError::Pin(format!(
            "{} exists already; the classifier is attached to {root}",
            dir.display()
        )));
    }
    if is_stale(dir) {
        // Pins of a dead namespace that had this inode: not ours to detach
        // from anything, only to remove.
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
    let result = (|| {
        let xdp = super::hooks::resolve(root, xdp_mode)?;
        let mut ebpf = super::load_with_capacity(capacity)?;
        let attached = attach_programs(&mut ebpf, root, AttachOptions { xdp, tc: true })?;
        for name in MAPS {
            let map = ebpf.map(name).ok_or(DatapathError::MissingMap(name))?;
            let pin_err =
                |e: aya::pin::PinError| DatapathError::Pin(format!("pin map {name}: {e}"));
            match map {
                Map::HashMap(m) | Map::PerCpuArray(m) | Map::Array(m) => {
                    m.pin(dir.join(name)).map_err(pin_err)?
                }
                _ => return Err(DatapathError::MissingMap(name)),
            }
        }
        let mode = attached.xdp_mode;
        pin_links(&mut ebpf, attached, dir)?;
        if mode.is_some() {
            let xdp: &mut Xdp = super::program(&mut ebpf, program_names::XDP)?;
            xdp.pin(dir.join(PROG_XDP))
                .map_err(|e| DatapathError::Pin(format!("pin {PROG_XDP}: {e}")))?;
        } else {
            // TC alone: the ingress program carries the log ring then.
            let name = program_names::TC_INGRESS;
            let tc: &mut SchedClassifier = super::program(&mut ebpf, name)?;
            tc.pin(dir.join(PROG_TC_INGRESS))
                .map_err(|e| DatapathError::Pin(format!("pin {PROG_TC_INGRESS}: {e}")))?;
        }
        let name = program_names::TC_ENDPOINT;
        let endpoint: &mut SchedClassifier = super::program(&mut ebpf, name)?;
        endpoint
            .load()
            .map_err(|source| DatapathError::Program { name, source })?;
        endpoint
            .pin(dir.join(PROG_TC_ENDPOINT))
            .map_err(|e| DatapathError::Pin(format!("pin {PROG_TC_ENDPOINT}: {e}")))?;
        Ok(mode)
    })();
    if result.is_err() {
        let _ = detach(root, dir);
    }
    result
}

fn pin_links(
    ebpf: &mut aya::Ebpf,
    attached: super::Attached,
    dir: &Path,
) -> Result<(), DatapathError> {
    let pin = |link: FdLink, name: &str| -> Result<(), DatapathError> {
        link.pin(dir.join(name))
            .map(|_| ())
            .map_err(|e| DatapathError::Pin(format!("pin {name}: {e}")))
    };
    {
        let xdp: &mut Xdp = super::program(ebpf, program_names::XDP)?;
        if let Some(id) = attached.xdp {
            let link = xdp.take_link(id).map_err(|source| DatapathError::Program {
                name: program_names::XDP,
                source,
            })?;
            let fd =
                FdLink::try_from(link).map_err(|e| DatapathError::Pin(format!("XDP link: {e}")))?;
            pin(fd, LINK_XDP)?;
        }
    }
    for (name, id) in attached.tc {
        let pin_name = if name == program_names::TC_INGRESS {
            LINK_TC_INGRESS
        } else {
            LINK_TC_EGRESS
        };
        let p: &mut SchedClassifier = super::program(ebpf, name)?;
        {
            let link = p
                .take_link(id)
                .map_err(|source| DatapathError::Program { name, source })?;
            if uses_tcx() {
                let fd = FdLink::try_from(link)
                    .map_err(|e| DatapathError::Pin(format!("TC link: {e}")))?;
                pin(fd, pin_name)?;
            } else {
                // A netlink filter stays on the qdisc once we let go of it;
                // dropping the link would remove it. Detached by name later.
                std::mem::forget(link);
            }
        }
    }
    Ok(())
}

/// Detaches the classifier from `root` (in the calling thread's namespace,
/// if the device still exists) and removes every pin under `dir`.
pub fn detach(root: &str, dir: &Path) -> Result<(), DatapathError> {
    // Detach the links first: removing a link's last pin detaches it only
    // once bpffs frees the inode, after an RCU grace period, and the
    // classifier must be off the device when `network rm` returns.
    for name in [LINK_XDP, LINK_TC_INGRESS, LINK_TC_EGRESS] {
        if let Ok(link) = crate::sys::bpf::obj_get(&dir.join(name)) {
            use std::os::fd::AsFd as _;
            let _ = crate::sys::bpf::link_detach(link.as_fd());
        }
    }
    for name in [
        LINK_XDP,
        LINK_TC_INGRESS,
        LINK_TC_EGRESS,
        PROG_XDP,
        PROG_TC_INGRESS,
        PROG_TC_ENDPOINT,
    ] {
        let _ = fs::remove_file(dir.join(name));
    }
    if !uses_tcx() {
        for (attach, name) in [
            (TcAttachType::Ingress, program_names::TC_INGRESS),
            (TcAttachType::Egress, program_names::TC_EGRESS),
        ] {
            let _ = tc::qdisc_detach_program(root, attach, name);
        }
    }
    for name in MAPS {
        let _ = fs::remove_file(dir.join(name));
    }
    if let Some(mark) = owner(dir) {
        let _ = fs::remove_dir(dir.join(mark));
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", dir, e)),
    }
}

/// Removes pin directories of namespaces that no longer exist (a lab or a
/// container host that went away). Returns the directories removed.
pub fn clean_stale() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(PIN_ROOT) else {
        return Vec::new();
    };
    let mut alive = std::collections::HashSet::new();
    for name in netns::list() {
        if let Ok(m) = fs::metadata(Path::new(netns::NETNS_RUN_DIR).join(name)) {
            alive.insert(m.ino());
        }
    }
    if let Ok(procs) = fs::read_dir("/proc") {
        for p in procs.flatten() {
            if let Ok(m) = fs::metadata(p.path().join("ns/net")) {
                alive.insert(m.ino());
            }
        }
    }
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((ino, root)) = name.split_once('-') else {
            continue;
        };
        let Ok(ino) = ino.parse::<u64>() else {
            continue;
        };
        if !alive.contains(&ino) {
            let _ = detach(root, &e.path());
            let _ = fs::remove_dir_all(e.path());
            removed.push(e.path());
        }
    }
    removed
}

/// The pinned maps of an attached classifier, each opened from its pin
/// the first time it is used: a command that adds one endpoint needs 5 of
/// the 11, a CNI ADD opened all of them 4 times (an object get, an info
/// query and a close each), and a stats read needs the counters alone.
pub struct PinnedMaps {
    dir: PathBuf,
    /// Per name of [`MAPS`], in that order: `None` inside for an optional
    /// map this classifier was pinned without.
    maps: [std::sync::OnceLock<Option<Map>>; MAPS.len()],
    /// The direct index, mapped on first use and kept.
    index: std::sync::OnceLock<Option<super::direct::DirectIndex>>,
    /// ENDPOINT_STATS mapped, for zeroing new slots and reading one, on
    /// first use.
    striped: std::sync::OnceLock<super::striped::StripedCounters>,
    /// ENDPOINT_TX_INVALID_SEEN mapped on first use (`None` for pins made
    /// before it).
    seen: std::sync::OnceLock<Option<super::tx_seen::SeenFlags>>,
}

impl PinnedMaps {
    /// The classifier pinned in `dir`: its ENDPOINTS map opened now (an
    /// error if there is none), the others when used.
    pub fn open(dir: &Path) -> Result<PinnedMaps, DatapathError> {
        let maps = PinnedMaps {
            dir: dir.to_owned(),
            maps: Default::default(),
            index: std::sync::OnceLock::new(),
            striped: std::sync::OnceLock::new(),
            seen: std::sync::OnceLock::new(),
        };
        maps.get(map_names::ENDPOINTS)?;
        Ok(maps)
    }

    /// Opens map `name` from its pin. A classifier pinned by an mvnet
    /// before the direct index has no ENDPOINT_INDEX; it keeps working from
    /// the hash alone. One pinned before ENDPOINT_MISMATCH does not count
    /// mismatches per endpoint (verify then explains less): `None`.
    fn load(&self, name: &'static str) -> Result<Option<Map>, DatapathError> {
        let path = self.dir.join(name);
        if OPTIONAL.contains(&name) && !path.exists() {
            return Ok(None);
        }
        let data = MapData::from_pin(path).map_err(|source| DatapathError::Map { name, source })?;
        let map = Map::from_map_data(data).map_err(|source| DatapathError::Map { name, source })?;
        Ok(Some(map))
    }

    /// The position of `name` in [`MAPS`].
    fn position(name: &'static str) -> Result<usize, DatapathError> {
        MAPS.iter()
            .position(|n| *n == name)
            .ok_or(DatapathError::MissingMap(name))
    }

    fn get(&self, name: &'static str) -> Result<&Map, DatapathError> {
        let cell = &self.maps[Self::position(name)?];
        if cell.get().is_none() {
            let map = self.load(name)?;
            let _ = cell.set(map);
        }
        cell.get()
            .and_then(Option::as_ref)
            .ok_or(DatapathError::MissingMap(name))
    }

    /// Map `name` of [`OPTIONAL`]: `None` when this classifier was pinned
    /// without it. Any other error is an error: taken for an absent map, a
    /// transient failure to open one (ENOMEM, EMFILE) would have a writer
    /// skip the direct index or the zeroing of a new slot's counters, or
    /// a device its source checks.
    fn optional(&self, name: &'static str) -> Result<Option<&Map>, DatapathError> {
        match self.get(name) {
            Ok(map) => Ok(Some(map)),
            Err(DatapathError::MissingMap(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn endpoints(&mut self) -> Result<EndpointTable<'_>, DatapathError> {
        let index = self.index()?.cloned();
        let capacity = self.capacity()?;
        EndpointTable::new(self.get_mut(map_names::ENDPOINTS)?, index, capacity)
    }

    /// The direct index, mapped once (`None` for pins made before it).
    fn index(&self) -> Result<Option<&super::direct::DirectIndex>, DatapathError> {
        Ok(match self.index.get() {
            Some(i) => i.as_ref(),
            None => {
                let i = super::direct_index(self.optional(map_names::ENDPOINT_INDEX)?)?;
                self.index.get_or_init(|| i).as_ref()
            }
        })
    }

    /// The slot of endpoint (`mac`, `vlan`) if the direct index holds it:
    /// a load from the mapping, no system call. `None` when it does not
    /// (its word belongs to another endpoint, or it is not in the table):
    /// then only the hash ([`PinnedMaps::endpoints_ro`]) can tell.
    pub fn indexed_slot(&self, mac: [u8; 6], vlan: u16) -> Result<Option<u32>, DatapathError> {
        Ok(self.index()?.and_then(|i| i.get(&mac, vlan)))
    }

    /// How many endpoints the table holds, from the fill word the
    /// controller keeps beside the direct index, without walking the hash;
    /// for pins made before the fill word, from a walk of the hash.
    pub fn endpoint_count(&self) -> Result<usize, DatapathError> {
        if let Some(n) = self.index()?.and_then(|i| i.fill()) {
            return Ok(n as usize);
        }
        match self.endpoints_ro() {
            Some(view) => Ok(view.entries()?.len()),
            None => Ok(0),
        }
    }

    /// The endpoint capacity this classifier was attached with (its
    /// `--max-endpoints`), as the kernel records it: the `max_entries` of
    /// the pinned ENDPOINT_STATS.
    pub fn capacity(&self) -> Result<u32, DatapathError> {
        super::capacity_of(self.get(map_names::ENDPOINT_STATS)?)
    }

    /// A read-only view of the endpoint table.
    pub fn endpoints_ro(&self) -> Option<super::endpoints::EndpointView<'_>> {
        super::endpoints::EndpointView::new(self.get(map_names::ENDPOINTS).ok()?)
    }

    pub fn counters(&self) -> Result<CounterSnapshot, DatapathError> {
        CounterSnapshot::read_with(|name| self.get(name))
    }

    /// ENDPOINT_MISMATCH of `slot`, summed over CPUs: frames to that
    /// endpoint's MAC on another VLAN that XDP passed. `None` for a
    /// classifier pinned before the map existed.
    pub fn mismatch(&self, slot: u32) -> Result<Option<macvlan_common::Counter>, DatapathError> {
        self.slot_counter(map_names::ENDPOINT_MISMATCH, slot)
    }

    /// Only the verdict counters (a few lookups instead of thousands):
    /// for polling while traffic runs.
    pub fn verdicts(&self) -> Result<super::VerdictTable, DatapathError> {
        CounterSnapshot::read_verdicts(|name| self.get(name))
    }

    fn get_mut(&mut self, name: &'static str) -> Result<&mut Map, DatapathError> {
        // Opened (or found absent) by `get` first.
        self.get(name)?;
        self.maps[Self::position(name)?]
            .get_mut()
            .and_then(Option::as_mut)
            .ok_or(DatapathError::MissingMap(name))
    }

    /// The policy bits (`vlan_policy`) of VLAN `vlan`.
    pub fn vlan_policy(&self, vlan: u16) -> Result<u32, DatapathError> {
        let name = map_names::VLAN_POLICY;
        let array: aya::maps::Array<&MapData, u32> = aya::maps::Array::try_from(self.get(name)?)
            .map_err(|source| DatapathError::Map { name, source })?;
        array
            .get(&(u32::from(vlan) & 0xfff), 0)
            .map_err(|source| DatapathError::Map { name, source })
    }

    /// The root-wide settings.
    pub fn config(&self) -> Result<Config, DatapathError> {
        let name = map_names::CONFIG;
        let array: aya::maps::Array<&MapData, Config> = aya::maps::Array::try_from(self.get(name)?)
            .map_err(|source| DatapathError::Map { name, source })?;
        array
            .get(&0, 0)
            .map_err(|source| DatapathError::Map { name, source })
    }

    /// Sets the policy bits (`vlan_policy`) of VLAN `vlan`.
    pub fn set_vlan_policy(&mut self, vlan: u16, flags: u32) -> Result<(), DatapathError> {
        let name = map_names::VLAN_POLICY;
        let mut array: aya::maps::Array<&mut MapData, u32> =
            aya::maps::Array::try_from(self.get_mut(name)?)
                .map_err(|source| DatapathError::Map { name, source })?;
        array
            .set(u32::from(vlan) & 0xfff, flags, 0)
            .map_err(|source| DatapathError::Map { name, source })
    }

    /// Adds an endpoint with its counters zeroed; returns its slot.
    pub fn add_endpoint(&mut self, entry: super::EndpointEntry) -> Result<u32, DatapathError> {
        self.add_endpoints(std::slice::from_ref(&entry))?
            .pop()
            .expect("one result per entry")
    }

    /// Adds endpoints as [`PinnedMaps::add_endpoint`] does, with one read
    /// of the table for all of them: one result each, in order.
    pub fn add_endpoints(
        &mut self,
        entries: &[super::EndpointEntry],
    ) -> Result<Vec<Result<u32, DatapathError>>, DatapathError> {
        let mut slots = self.endpoints()?.slots();
        // Counters zeroed before the entry exists: once the programs find
        // the slot, a CPU may be adding to a count loaded before the zero
        // was stored, and the new endpoint would start with the old one's.
        let zeroed: Vec<Result<u32, DatapathError>> = entries
            .iter()
            .map(|_| {
                let slot = slots.take()?;
                self.zero_counters(slot)?;
                Ok(slot)
            })
            .collect();
        let mut table = self.endpoints()?;
        let mut replaced = Vec::new();
        let added = entries
            .iter()
            .zip(zeroed)
            .map(|(e, slot)| {
                let slot = slot?;
                replaced.extend(table.insert_at(*e, slot)?);
                Ok(slot)
            })
            .collect();
        drop(table);
        // An entry that was there already (left by a writer killed before
        // it removed it) had another slot: that slot is free now, and the
        // device entries still naming it would judge a later endpoint's
        // device there by the gone one's identity.
        for slot in replaced {
            self.remove_devices(slot)?;
        }
        Ok(added)
    }

    /// ENDPOINT_STATS mapped (once, kept), or `None` for pins made before
    /// the stripes (a per-CPU array).
    fn striped(&self) -> Result<Option<&super::striped::StripedCounters>, DatapathError> {
        let Map::Array(data) = self.get(map_names::ENDPOINT_STATS)? else {
            return Ok(None);
        };
        if let Some(s) = self.striped.get() {
            return Ok(Some(s));
        }
        let s = super::striped::StripedCounters::map(data, false)?;
        Ok(Some(self.striped.get_or_init(|| s)))
    }

    /// The counters of one endpoint's slot, summed over CPUs.
    pub fn endpoint_counters(
        &self,
        slot: u32,
    ) -> Result<macvlan_common::EndpointCounters, DatapathError> {
        if let Some(striped) = self.striped()? {
            return striped.slot(slot);
        }
        let name = map_names::ENDPOINT_STATS;
        per_cpu_slot(self.get(name)?, name, slot, super::counters::merge_endpoint)
    }

    /// Zeroes the per-endpoint counters of a new endpoint's slot.
    fn zero_counters(&mut self, slot: u32) -> Result<(), DatapathError> {
        match self.striped()? {
            Some(striped) => striped.zero(slot)?,
            // Pins made before the stripes: a per-CPU array.
            _ => {
                self.zero_slot::<macvlan_common::EndpointCounters>(map_names::ENDPOINT_STATS, slot)?
            }
        }
        // Absent from classifiers pinned before it existed.
        for name in [
            map_names::ENDPOINT_MISMATCH,
            map_names::ENDPOINT_MALFORMED,
            map_names::ENDPOINT_TX_INVALID,
        ] {
            if self.optional(name)?.is_some() {
                self.zero_slot::<macvlan_common::Counter>(name, slot)?;
            }
        }
        // After the count it flags is zero: a reader that finds the flag
        // clear finds a zero count.
        if let Some(seen) = self.seen()? {
            seen.clear(slot);
        }
        Ok(())
    }

    /// ENDPOINT_TX_INVALID_SEEN, mapped once (`None` for pins made before
    /// it).
    fn seen(&self) -> Result<Option<&super::tx_seen::SeenFlags>, DatapathError> {
        if let Some(s) = self.seen.get() {
            return Ok(s.as_ref());
        }
        let s = match self.optional(map_names::ENDPOINT_TX_INVALID_SEEN)? {
            Some(Map::Array(data)) => Some(super::tx_seen::SeenFlags::map(data)?),
            _ => None,
        };
        Ok(self.seen.get_or_init(|| s).as_ref())
    }

    /// The slots ENDPOINT_TX_INVALID_SEEN flags, ascending (`None` for
    /// pins made before it).
    pub fn tx_invalid_flagged(&self) -> Result<Option<Vec<u32>>, DatapathError> {
        Ok(self.seen()?.map(|s| s.slots()))
    }

    /// Every endpoint slot whose device sent frames that failed the source
    /// checks, with that count (ENDPOINT_TX_INVALID summed over CPUs),
    /// ascending by slot: a lookup of each slot ENDPOINT_TX_INVALID_SEEN
    /// flags, or one batch read of the whole array where that is cheaper
    /// (more than one slot in [`BATCH_SLOTS_PER_LOOKUP`] flagged) and for
    /// pins made before the flags. Empty for pins made before
    /// ENDPOINT_TX_INVALID.
    pub fn tx_invalid_counts(&self) -> Result<Vec<(u32, macvlan_common::Counter)>, DatapathError> {
        let name = map_names::ENDPOINT_TX_INVALID;
        let Some(map) = self.optional(name)? else {
            return Ok(Vec::new());
        };
        let capacity = self.capacity()?;
        let counts: Vec<(u32, macvlan_common::Counter)> = match self.tx_invalid_flagged()? {
            Some(slots) if slots.len() as u64 * BATCH_SLOTS_PER_LOOKUP <= u64::from(capacity) => {
                let mut out = Vec::with_capacity(slots.len());
                for slot in slots {
                    if let Some(c) = self.tx_invalid(slot)? {
                        out.push((slot, c));
                    }
                }
                out
            }
            _ => {
                let data = super::batch::map_data(map);
                super::batch::per_cpu_array_sum(
                    data,
                    name,
                    capacity,
                    macvlan_common::Counter::merge,
                )?
                .into_iter()
                .enumerate()
                .map(|(slot, c)| (slot as u32, c))
                .collect()
            }
        };
        Ok(counts.into_iter().filter(|(_, c)| c.frames != 0).collect())
    }

    /// Whether this classifier checks sources on endpoint devices (pinned
    /// by an mvnet that has ENDPOINT_DEVICES).
    pub fn has_devices(&self) -> Result<bool, DatapathError> {
        Ok(self.optional(map_names::ENDPOINT_DEVICES)?.is_some())
    }

    /// Records what the endpoint device `ifindex` may send as. Called
    /// before the check is attached, which finds it there; the entry is
    /// marked `DEVICE_CHECKED` after ([`PinnedMaps::mark_device_checked`]).
    /// An ifindex recorded already (for another endpoint, in another
    /// namespace) is an error: its frames would be judged by the wrong
    /// identity.
    pub fn register_device(
        &mut self,
        ifindex: u32,
        identity: macvlan_common::DeviceIdentity,
    ) -> Result<(), DatapathError> {
        let name = map_names::ENDPOINT_DEVICES;
        // A stray is counted before it is added (see `direct::FILL`).
        let stray = !super::devices::is_own_key(ifindex, identity.slot);
        let index = self.index()?.cloned();
        if stray {
            if let Some(i) = &index {
                i.count_strays(true, 1);
            }
        }
        let mut map: aya::maps::HashMap<&mut MapData, u32, macvlan_common::DeviceIdentity> =
            aya::maps::HashMap::try_from(self.get_mut(name)?)
                .map_err(|source| DatapathError::Map { name, source })?;
        const BPF_NOEXIST: u64 = 1;
        if let Err(source) = map.insert(ifindex, identity, BPF_NOEXIST) {
            if let (true, Some(i)) = (stray, &index) {
                i.count_strays(false, 1);
            }
            return Err(DatapathError::Map { name, source });
        }
        Ok(())
    }

    /// Marks endpoint `identity`'s entry `DEVICE_CHECKED`: from now on the
    /// parent's egress takes a frame with its MAC only with the device's
    /// stamp. Called once the check is attached to the device: marked
    /// before, a writer killed in between would leave every frame of the
    /// device dropped under enforce as unstamped.
    pub fn mark_device_checked(
        &mut self,
        identity: &macvlan_common::DeviceIdentity,
    ) -> Result<(), DatapathError> {
        self.endpoints()?
            .mark_device_checked(identity.mac, identity.vlan)
    }

    /// The identity registered for device `ifindex`, if any.
    pub fn device(&self, ifindex: u32) -> Option<macvlan_common::DeviceIdentity> {
        let map: aya::maps::HashMap<&MapData, u32, macvlan_common::DeviceIdentity> =
            aya::maps::HashMap::try_from(self.get(map_names::ENDPOINT_DEVICES).ok()?).ok()?;
        map.get(&ifindex, 0).ok()
    }

    /// How many device entries are under a key not of their slot's own
    /// (`direct::FILL`): `None` for pins made before the fill word, whose
    /// every removal reads the whole table.
    pub fn device_strays(&self) -> Option<u64> {
        self.index().ok().flatten().and_then(|i| i.strays())
    }

    /// Removes every device entry of endpoint `slot` (its device is gone):
    /// those under the slot's own keys, looked up one by one (17 lookups),
    /// and, while some entry of the root is a stray (or the pins are too
    /// old to say), any other, found in one read of the whole table
    /// (BPF_MAP_LOOKUP_BATCH: 1.4 ms of an `rm` at 4000 endpoints, against
    /// some 20 us for the lookups).
    pub fn remove_devices(&mut self, slot: u32) -> Result<(), DatapathError> {
        let name = map_names::ENDPOINT_DEVICES;
        let index = self.index()?.cloned();
        let strays = index.as_ref().and_then(|i| i.strays());
        // Absent from pins made before device checks; a failure to open or
        // read it is an error, as a device entry left behind would judge
        // whatever device later gets its number by this endpoint's identity.
        if self.optional(name)?.is_none() {
            return Ok(());
        }
        let map = self.get_mut(name)?;
        let map_err = |source| DatapathError::Map { name, source };
        let stale: Vec<u32> = if strays == Some(0) {
            let map: aya::maps::HashMap<&MapData, u32, macvlan_common::DeviceIdentity> =
                aya::maps::HashMap::try_from(&*map).map_err(map_err)?;
            // Another slot's stray may sit under one of this slot's
            // candidates (a restored device's old number): only this
            // slot's entries go.
            let mut own = Vec::new();
            for k in super::devices::own_keys(slot) {
                match map.get(&k, 0) {
                    Ok(id) if id.slot == slot => own.push(k),
                    Ok(_) => {}
                    Err(e) if super::not_found(&e) => {}
                    Err(e) => return Err(map_err(e)),
                }
            }
            own
        } else {
            device_entries(map)?
                .into_iter()
                .filter(|(_, id)| id.slot == slot)
                .map(|(k, _)| k)
                .collect()
        };
        let mut map: aya::maps::HashMap<&mut MapData, u32, macvlan_common::DeviceIdentity> =
            aya::maps::HashMap::try_from(map).map_err(map_err)?;
        let mut gone = 0;
        let mut failed = None;
        for k in stale {
            match map.remove(&k) {
                Ok(()) => {
                    if !super::devices::is_own_key(k, slot) {
                        gone += 1;
                    }
                }
                Err(e) if super::not_found(&e) => {}
                Err(e) => {
                    failed = Some(map_err(e));
                    break;
                }
            }
        }
        // Counted down after they are gone (see `direct::FILL`).
        if let Some(i) = index {
            i.count_strays(false, gone);
        }
        failed.map_or(Ok(()), Err)
    }

    /// Device entries whose endpoint is gone: the identity's (MAC, VLAN)
    /// has no entry in the endpoint table, or one with another slot (left
    /// by a writer killed between its removal of an endpoint and of its
    /// devices, or by one that replaced an entry in place). Such an entry
    /// judges whatever device later gets its number by a gone endpoint's
    /// identity, and counts into a slot another endpoint may hold. With
    /// `fix`, removes them. Returns how many there were; 0 for pins
    /// without device checks.
    pub fn prune_devices(&mut self, fix: bool) -> Result<usize, DatapathError> {
        let name = map_names::ENDPOINT_DEVICES;
        let Some(map) = self.optional(name)? else {
            return Ok(0);
        };
        let devices = device_entries(map)?;
        let orphans: Vec<(u32, u32)> = {
            let Some(table) = self.endpoints_ro() else {
                return Ok(0);
            };
            devices
                .into_iter()
                .filter(|(_, id)| !endpoint_lives(&table, id))
                .map(|(k, id)| (k, id.slot))
                .collect()
        };
        if !fix || orphans.is_empty() {
            return Ok(orphans.len());
        }
        let index = self.index()?.cloned();
        let mut map: aya::maps::HashMap<&mut MapData, u32, macvlan_common::DeviceIdentity> =
            aya::maps::HashMap::try_from(self.get_mut(name)?)
                .map_err(|source| DatapathError::Map { name, source })?;
        let mut strays = 0;
        for (k, slot) in &orphans {
            if map.remove(k).is_ok() && !super::devices::is_own_key(*k, *slot) {
                strays += 1;
            }
        }
        if let Some(i) = index {
            i.count_strays(false, strays);
        }
        Ok(orphans.len())
    }

    /// Counts the device entries under a key not of their slot's own, in
    /// one read of the table, and (with `fix`) sets the count kept beside
    /// the direct index to it: a writer killed between its count and its
    /// change of the table leaves the count too high (every removal then
    /// reads the table), and an mvnet before the count added strays
    /// without counting them (a removal would then leave them behind).
    /// Returns the count before and the count read when they differ;
    /// `None` for pins without the fill word or without device checks.
    pub fn resync_device_strays(&self, fix: bool) -> Result<Option<(u64, u64)>, DatapathError> {
        let name = map_names::ENDPOINT_DEVICES;
        let (Some(index), Ok(map)) = (self.index()?, self.get(name)) else {
            return Ok(None);
        };
        let Some(was) = index.strays() else {
            return Ok(None);
        };
        // Orphans ([`PinnedMaps::prune_devices`]) are not counted: `restore`
        // removes them first, and `restore --check` says the same.
        let table = self.endpoints_ro();
        let is = device_entries(map)?
            .into_iter()
            .filter(|(k, id)| !super::devices::is_own_key(*k, id.slot))
            .filter(|(_, id)| table.as_ref().is_none_or(|t| endpoint_lives(t, id)))
            .count() as u64;
        if was == is {
            return Ok(None);
        }
        if fix {
            index.set_strays(is);
        }
        Ok(Some((was, is)))
    }

    /// Element `slot` of the per-CPU [`Counter`](macvlan_common::Counter)
    /// array `name`, summed over CPUs; `None` if the pins lack the map.
    fn slot_counter(
        &self,
        name: &'static str,
        slot: u32,
    ) -> Result<Option<macvlan_common::Counter>, DatapathError> {
        let Some(map) = self.optional(name)? else {
            return Ok(None);
        };
        per_cpu_slot(map, name, slot, macvlan_common::Counter::merge).map(Some)
    }

    /// ENDPOINT_MALFORMED of `slot`: malformed frames to that endpoint's
    /// MAC that XDP passed. `None` for a classifier pinned before the map.
    pub fn malformed(&self, slot: u32) -> Result<Option<macvlan_common::Counter>, DatapathError> {
        self.slot_counter(map_names::ENDPOINT_MALFORMED, slot)
    }

    /// ENDPOINT_TX_INVALID of `slot`: frames the endpoint's device sent that
    /// failed the source checks. `None` for a classifier pinned before it.
    pub fn tx_invalid(&self, slot: u32) -> Result<Option<macvlan_common::Counter>, DatapathError> {
        self.slot_counter(map_names::ENDPOINT_TX_INVALID, slot)
    }

    /// Zeroes element `slot` of the per-CPU array `name` on every CPU.
    fn zero_slot<V: aya::Pod + Default + Clone>(
        &mut self,
        name: &'static str,
        slot: u32,
    ) -> Result<(), DatapathError> {
        let mut array: aya::maps::PerCpuArray<&mut MapData, V> =
            aya::maps::PerCpuArray::try_from(self.get_mut(name)?)
                .map_err(|source| DatapathError::Map { name, source })?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| DatapathError::Pin(format!("counting CPUs: {e}")))?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![V::default(); cpus])
            .map_err(|e| DatapathError::Pin(format!("zero counters: {e}")))?;
        array
            .set(slot, zeros, 0)
            .map_err(|source| DatapathError::Map { name, source })
    }

    /// Sets the root-wide settings (policy for frames of no endpoint).
    pub fn set_config(&mut self, config: Config) -> Result<(), DatapathError> {
        let name = map_names::CONFIG;
        let mut array: aya::maps::Array<&mut MapData, Config> =
            aya::maps::Array::try_from(self.get_mut(name)?)
                .map_err(|source| DatapathError::Map { name, source })?;
        array
            .set(0, config, 0)
            .map_err(|source| DatapathError::Map { name, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mark is FNV-1a 64 of the path: a number fixed across builds
    /// and toolchains, as pins outlive the binary that made them.
    #[test]
    fn owner_mark_is_fnv1a_of_the_path() {
        assert_eq!(
            owner_mark(Path::new("/nonexistent-mvnet/state")),
            "state-14cfd106b81b510c"
        );
    }
}
