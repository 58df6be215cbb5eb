//! Bounds-checked Ethernet + VLAN parsing over direct packet access.
//!
//! The verifier only accepts a packet read after a comparison of
//! `data + offset + size` against `data_end` on the same path, so every
//! header read goes through [`ptr_at`], and the number of VLAN tags is
//! unrolled to a constant (0, 1 or 2) instead of a loop.
//!
//! Headers are read in whole words (two 8-byte loads for the addresses and
//! the Ethertype, one 4-byte load per tag): LLVM's BPF backend splits every
//! unaligned read into single bytes, which made the parse several times
//! longer than the lookup it feeds. The kernel allows unaligned packet
//! loads on the architectures we run on (`HAVE_EFFICIENT_UNALIGNED_ACCESS`),
//! so [`load`] reads through a plain (aligned-typed) pointer.
use macvlan_common::{ETH_P_8021AD, ETH_P_8021Q, MAC_MASK};

pub const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;

/// Marks a VLAN id taken from an outer 802.1ad (S-)tag: such a frame belongs
/// to no 802.1Q endpoint. Outside the 12-bit id range, below `VLAN_ANY`.
pub const VLAN_SERVICE_TAG: u16 = 0x1000;

/// The parsed link layer of a frame.
pub struct Ethernet {
    /// Destination and source MACs as `macvlan_common::mac_word`s.
    pub dst: u64,
    pub src: u64,
    /// VLAN that decides membership: the outermost tag's id (0 = untagged),
    /// with [`VLAN_SERVICE_TAG`] set if that tag is an 802.1ad S-tag.
    pub vlan: u16,
    /// Ethertype after the tags (host order).
    pub proto: u16,
    /// Offset of the L3 header in the bytes.
    pub l3_offset: usize,
}

/// Returns a pointer to a `T` at `offset`, or `None` if it would pass the end.
#[inline(always)]
pub fn ptr_at<T>(data: usize, data_end: usize, offset: usize) -> Option<*const T> {
    if data + offset + core::mem::size_of::<T>() > data_end {
        return None;
    }
    Some((data + offset) as *const T)
}

/// Reads a `T` at `offset` in one load, or `None` past the end. See the
/// module comment on alignment.
#[inline(always)]
fn load<T: Copy>(data: usize, data_end: usize, offset: usize) -> Option<T> {
    let p = ptr_at::<T>(data, data_end, offset)?;
    // SAFETY: bounds checked by ptr_at; the kernel permits the unaligned
    // load this may be.
    Some(unsafe { *p })
}

/// One VLAN tag after the Ethertype that announced it: (TCI, the next
/// Ethertype), from one 4-byte load.
#[inline(always)]
fn tag(data: usize, data_end: usize, offset: usize) -> Option<(u16, u16)> {
    let w: u32 = load(data, data_end, offset)?;
    Some((u16::from_be(w as u16), u16::from_be((w >> 16) as u16)))
}

/// Parses Ethernet and up to two VLAN tags. `meta_vlan` is the tag TC found
/// in skb metadata (already removed from the bytes) as `TPID << 16 | TCI`,
/// 0 for none: it is then the outermost tag. Returns `None` for a truncated
/// frame.
///
/// `meta_vlan` is a plain integer rather than an `Option<(u16, u16)>`: LLVM
/// leaves the payload of a `None` undefined and may read it speculatively,
/// which the verifier rejects as an uninitialised register.
#[inline(always)]
pub fn ethernet(data: usize, data_end: usize, meta_vlan: u32) -> Option<Ethernet> {
    ptr_at::<[u8; ETH_HLEN]>(data, data_end, 0)?;
    // Bytes 0..8: destination + 2 source bytes; 6..14: source + Ethertype.
    let w0: u64 = load(data, data_end, 0)?;
    let w1: u64 = load(data, data_end, 6)?;
    let dst = w0 & MAC_MASK;
    let src = w1 & MAC_MASK;
    let mut proto = u16::from_be((w1 >> 48) as u16);
    let mut offset = ETH_HLEN;

    // `outer_seen`: the outer tag decides the VLAN, unless it is a
    // priority tag (802.1Q, id 0) with another tag inside: the kernel then
    // strips it and takes the inner tag's VLAN (`check_vlan_id` in
    // `__netif_receive_skb_core`), and so does the parser (`priority`).
    let mut outer_seen = meta_vlan != 0;
    let mut priority = false;
    let mut vlan = if outer_seen {
        let tpid = (meta_vlan >> 16) as u16;
        let v = outer_vlan(tpid, meta_vlan as u16);
        priority = tpid == ETH_P_8021Q && v == 0;
        v
    } else {
        0
    };

    // Tag 1 of at most 2 in the bytes (unrolled: the verifier wants no loop).
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let (tci, next) = tag(data, data_end, offset)?;
        if !outer_seen || priority {
            vlan = outer_vlan(proto, tci);
            priority = !outer_seen && proto == ETH_P_8021Q && vlan == 0;
            outer_seen = true;
        }
        proto = next;
        offset += VLAN_HLEN;
    }
    // Tag 2.
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let (tci, next) = tag(data, data_end, offset)?;
        if !outer_seen || priority {
            vlan = outer_vlan(proto, tci);
        }
        proto = next;
        offset += VLAN_HLEN;
    }

    // A third tag is not parsed: the frame is classified by its outer
    // tag, and the bytes after the second tag are payload to us.
    Some(Ethernet {
        dst,
        src,
        vlan,
        proto,
        l3_offset: offset,
    })
}

#[inline(always)]
fn outer_vlan(tpid: u16, tci: u16) -> u16 {
    let id = tci & 0x0fff;
    if tpid == ETH_P_8021AD {
        id | VLAN_SERVICE_TAG
    } else {
        id
    }
}

/// Reads `N` bytes at `offset`, or `None` past the end.
#[inline(always)]
pub fn bytes_at<const N: usize>(data: usize, data_end: usize, offset: usize) -> Option<[u8; N]> {
    let p = ptr_at::<[u8; N]>(data, data_end, offset)?;
    // SAFETY: bounds checked by ptr_at.
    Some(unsafe { *p })
}
