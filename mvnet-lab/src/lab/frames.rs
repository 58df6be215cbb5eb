//! The one frame builder: Ethernet with 0, 1 or 2 VLAN tags around a small
//! IPv4/UDP, IPv6/UDP or ARP payload, built with etherparse. It never
//! panics: a payload that IP cannot carry is an error, found before
//! anything is allocated (fuzzed in the tests below).
use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{EtherType, PacketBuilder};

/// UDP data an IPv4 packet can carry: 65535 minus the IPv4 and UDP headers.
pub const MAX_UDP4_DATA: usize = 65_535 - 20 - 8;
/// UDP data an IPv6 packet can carry: its payload length (16 bits) minus
/// the UDP header.
pub const MAX_UDP6_DATA: usize = 65_535 - 8;

/// A frame that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error(
        "{data_len} bytes of UDP data do not fit one {ip} packet (at most {max}); \
         ask for a smaller frame"
    )]
    TooLarge {
        data_len: usize,
        ip: &'static str,
        max: usize,
    },
    #[error("building the frame: {0}")]
    Build(String),
}

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
    pub fn build(&self) -> Result<Vec<u8>, FrameError> {
        let too_large = |ip, max| FrameError::TooLarge {
            data_len: self.data_len,
            ip,
            max,
        };
        let mut l2 = Vec::with_capacity(64);
        l2.extend_from_slice(&self.dst);
        l2.extend_from_slice(&self.src);
        let write = |b: etherparse::PacketBuilderStep<etherparse::UdpHeader>| {
            let data = vec![0xa5; self.data_len];
            let mut out = Vec::with_capacity(b.size(data.len()));
            b.write(&mut out, &data)
                .map_err(|e| FrameError::Build(e.to_string()))?;
            Ok::<_, FrameError>(out)
        };
        let mut body = match self.payload {
            // Checked before `write` allocates the data.
            Payload::Udp4 { .. } if self.data_len > MAX_UDP4_DATA => {
                return Err(too_large("IPv4", MAX_UDP4_DATA))
            }
            Payload::Udp6 { .. } if self.data_len > MAX_UDP6_DATA => {
                return Err(too_large("IPv6", MAX_UDP6_DATA))
            }
            Payload::Udp4 { src, dst } => (
                EtherType::IPV4,
                write(PacketBuilder::ipv4(src.octets(), dst.octets(), 64).udp(40000, 9))?,
            ),
            Payload::Udp6 { src, dst } => (
                EtherType::IPV6,
                write(PacketBuilder::ipv6(src.octets(), dst.octets(), 64).udp(40000, 9))?,
            ),
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
        Ok(l2)
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
        let f = FrameSpec::udp4(A, B).build().unwrap();
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
            .build()
            .unwrap();
        assert_eq!(&f[12..14], &[0x88, 0xa8]);
        assert_eq!(&f[14..16], &[0x00, 100]);
        assert_eq!(&f[16..18], &[0x81, 0x00]);
        assert_eq!(&f[18..20], &[0x00, 10]);
        assert_eq!(&f[20..22], &[0x08, 0x00]);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        assert!(p.vlan.is_some());
    }

    /// The builder never panics and never allocates without bound: over
    /// 100,000 random specs (fixed seed, so a failure replays), every frame
    /// is exactly what was asked for, and every payload IP cannot carry is
    /// a `TooLarge` error.
    #[test]
    fn fuzz_the_builder_never_panics() {
        use proptest::{
            prelude::*,
            test_runner::{Config, RngSeed, TestCaseError, TestRunner},
        };

        let payload = prop_oneof![
            (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(s, d)| Payload::Udp4 {
                src: s.into(),
                dst: d.into()
            }),
            (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(s, d)| Payload::Udp6 {
                src: s.into(),
                dst: d.into()
            }),
            (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(s, t)| Payload::Arp {
                sender: s.into(),
                target: t.into()
            }),
        ];
        // Mostly Ethernet-sized, some absurd, about 1,000 at the IP limits
        // (64 KiB each: these dominate the run time).
        let data_len = prop_oneof![
            90 => 0..2000usize,
            1 => (MAX_UDP4_DATA - 4)..(MAX_UDP6_DATA + 4),
            9 => any::<usize>(),
        ];
        let tags = proptest::collection::vec(
            (any::<u16>(), any::<u16>()).prop_map(|(tpid, vid)| Tag { tpid, vid }),
            0..=3,
        );
        let spec = (any::<[u8; 6]>(), any::<[u8; 6]>(), tags, payload, data_len).prop_map(
            |(dst, src, tags, payload, data_len)| FrameSpec {
                dst,
                src,
                tags,
                payload,
                data_len,
            },
        );
        let config = Config {
            cases: 100_000,
            rng_seed: RngSeed::Fixed(0x6d76_6e65_745f_6c61),
            failure_persistence: None,
            ..Config::default()
        };
        let check = |f: FrameSpec| -> Result<(), TestCaseError> {
            let (ether_type, l3_len, max) = match f.payload {
                Payload::Udp4 { .. } => (0x0800, 28usize.checked_add(f.data_len), MAX_UDP4_DATA),
                Payload::Udp6 { .. } => (0x86dd, 48usize.checked_add(f.data_len), MAX_UDP6_DATA),
                Payload::Arp { .. } => (0x0806, Some(28), usize::MAX),
            };
            let built = f.build();
            if f.data_len > max {
                prop_assert!(
                    matches!(built, Err(FrameError::TooLarge { data_len, .. }) if data_len == f.data_len),
                    "{built:?}"
                );
                return Ok(());
            }
            let frame = built.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let off = 12 + 4 * f.tags.len();
            prop_assert_eq!(frame.len(), off + 2 + l3_len.unwrap());
            prop_assert_eq!(&frame[0..6], &f.dst);
            prop_assert_eq!(&frame[6..12], &f.src);
            for (i, t) in f.tags.iter().enumerate() {
                let at = 12 + 4 * i;
                prop_assert_eq!(&frame[at..at + 2], &t.tpid.to_be_bytes());
                prop_assert_eq!(&frame[at + 2..at + 4], &(t.vid & 0x0fff).to_be_bytes());
            }
            prop_assert_eq!(&frame[off..off + 2], &u16::to_be_bytes(ether_type));
            let l3 = &frame[off + 2..];
            match f.payload {
                Payload::Udp4 { src, dst } => {
                    let ip = etherparse::Ipv4Slice::from_slice(l3)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(ip.header().source_addr(), src);
                    prop_assert_eq!(ip.header().destination_addr(), dst);
                    let udp = etherparse::UdpSlice::from_slice(ip.payload().payload)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(udp.payload().len(), f.data_len);
                }
                Payload::Udp6 { src, dst } => {
                    let ip = etherparse::Ipv6Slice::from_slice(l3)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(ip.header().source_addr(), src);
                    prop_assert_eq!(ip.header().destination_addr(), dst);
                    let udp = etherparse::UdpSlice::from_slice(ip.payload().payload)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(udp.payload().len(), f.data_len);
                }
                Payload::Arp { sender, target } => {
                    prop_assert_eq!(&l3[0..8], &[0, 1, 0x08, 0, 6, 4, 0, 1]);
                    prop_assert_eq!(&l3[8..14], &f.src);
                    prop_assert_eq!(&l3[14..18], &sender.octets());
                    prop_assert_eq!(&l3[24..28], &target.octets());
                }
            }
            Ok(())
        };
        let start = std::time::Instant::now();
        TestRunner::new(config).run(&spec, check).unwrap();
        eprintln!("100000 frame specs fuzzed in {:?}", start.elapsed());
    }
}
