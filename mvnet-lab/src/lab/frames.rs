//! The one frame builder: Ethernet with 0, 1 or 2 VLAN tags around a small
//! IPv4/UDP, IPv6/UDP or ARP payload, built with etherparse.
use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{EtherType, PacketBuilder};

/// A VLAN tag: TPID 0x8100 (802.1Q) or 0x88a8 (802.1ad), and the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub tpid: u16,
    pub vid: u16,
}

impl Tag {
    pub const fn dot1q(vid: u16) -> Self {
        Self { tpid: 0x8100, vid }
    }
    pub const fn dot1ad(vid: u16) -> Self {
        Self { tpid: 0x88a8, vid }
    }
}

/// What a frame carries after the tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    Udp4 { src: Ipv4Addr, dst: Ipv4Addr },
    Udp6 { src: Ipv6Addr, dst: Ipv6Addr },
    Arp { sender: Ipv4Addr, target: Ipv4Addr },
}

/// A frame to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub tags: Vec<Tag>,
    pub payload: Payload,
    /// UDP payload length (ignored for ARP).
    pub data_len: usize,
}

impl FrameSpec {
    /// An untagged IPv4/UDP frame between documentation addresses.
    pub fn udp4(dst: [u8; 6], src: [u8; 6]) -> Self {
        Self {
            dst,
            src,
            tags: Vec::new(),
            payload: Payload::Udp4 {
                src: Ipv4Addr::new(192, 0, 2, 1),
                dst: Ipv4Addr::new(192, 0, 2, 2),
            },
            data_len: 18,
        }
    }

    pub fn tagged(mut self, tags: &[Tag]) -> Self {
        self.tags = tags.to_vec();
        self
    }

    pub fn payload(mut self, payload: Payload) -> Self {
        self.payload = payload;
        self
    }

    /// The frame's bytes (no FCS).
    pub fn build(&self) -> Vec<u8> {
        let mut l2 = Vec::with_capacity(64);
        l2.extend_from_slice(&self.dst);
        l2.extend_from_slice(&self.src);
        let mut body = match self.payload {
            Payload::Udp4 { src, dst } => {
                let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64).udp(40000, 9);
                let data = vec![0xa5; self.data_len];
                let mut out = Vec::with_capacity(b.size(data.len()));
                b.write(&mut out, &data).expect("write to Vec");
                (EtherType::IPV4, out)
            }
            Payload::Udp6 { src, dst } => {
                let b = PacketBuilder::ipv6(src.octets(), dst.octets(), 64).udp(40000, 9);
                let data = vec![0xa5; self.data_len];
                let mut out = Vec::with_capacity(b.size(data.len()));
                b.write(&mut out, &data).expect("write to Vec");
                (EtherType::IPV6, out)
            }
            Payload::Arp { sender, target } => {
                (EtherType::ARP, arp_request(self.src, sender, target))
            }
        };
        for tag in &self.tags {
            // TPID, then TCI (PCP 0, DEI 0, 12-bit id); the next type follows.
            l2.extend_from_slice(&tag.tpid.to_be_bytes());
            l2.extend_from_slice(&(tag.vid & 0x0fff).to_be_bytes());
        }
        l2.extend_from_slice(&body.0 .0.to_be_bytes());
        l2.append(&mut body.1);
        l2
    }
}

fn arp_request(sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = Vec::with_capacity(28);
    a.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tpa.octets());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::SlicedPacket;

    const A: [u8; 6] = [0x02, 0x42, 0xac, 0x10, 0x56, 0x02];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

    #[test]
    fn untagged_udp4_parses_back() {
        let f = FrameSpec::udp4(A, B).build();
        assert_eq!(f.len(), 14 + 20 + 8 + 18);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        assert!(p.vlan.is_none());
        assert_eq!(&f[0..6], &A);
        assert!(p.net.is_some() && p.transport.is_some());
    }

    #[test]
    fn tags_are_written_outer_first() {
        let f = FrameSpec::udp4(A, B)
            .tagged(&[Tag::dot1ad(100), Tag::dot1q(10)])
            .build();
        assert_eq!(&f[12..14], &[0x88, 0xa8]);
        assert_eq!(&f[14..16], &[0x00, 100]);
        assert_eq!(&f[16..18], &[0x81, 0x00]);
        assert_eq!(&f[18..20], &[0x00, 10]);
        assert_eq!(&f[20..22], &[0x08, 0x00]);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        assert!(p.vlan.is_some());
    }
}
