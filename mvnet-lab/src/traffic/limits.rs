//! The documented range of every number a traffic run takes. `mvnet
//! pktgen --help` shows them, clap refuses values outside them, and
//! [`check`] refuses them again for callers of the library (benches), so
//! no number can make a run allocate without bound or build a frame that
//! cannot exist.
use std::ops::RangeInclusive;

use anyhow::{bail, Result};

use super::RunSpec;

/// Frame length without FCS: Ethernet's minimum to the largest frame of
/// the usual 1500-byte MTU (a tagged frame keeps its tag inside this).
pub const SIZE: RangeInclusive<u64> = 60..=1514;
/// Frames per flow (1e9 is over 15 minutes at 1 Mpps).
pub const COUNT: RangeInclusive<u64> = 1..=1_000_000_000;
/// Frames per second over all flows (0 = unpaced).
pub const RATE: RangeInclusive<u64> = 0..=100_000_000;
/// Seconds of a --duration run.
pub const DURATION_SECS: RangeInclusive<f64> = 0.001..=3600.0;
/// pktgen kernel threads (at most one per CPU; the run says if fewer exist).
pub const THREADS: RangeInclusive<u64> = 1..=1024;
/// Flows to unknown MACs, and flows on a wrong VLAN (each flow is one
/// prepared frame, or one pktgen device).
pub const EXTRA_FLOWS: RangeInclusive<u64> = 0..=4096;
/// Frames in flight of the fallback generator: the receiver's ring is 256.
pub const WINDOW: RangeInclusive<u64> = 1..=256;
/// Seconds before sending stops.
pub const TIMEOUT_SECS: RangeInclusive<u64> = 1..=86_400;

/// `--flag VALUE` inside `range`, else an error naming both.
fn within<T: PartialOrd + std::fmt::Display>(
    flag: &str,
    value: T,
    range: &RangeInclusive<T>,
) -> Result<()> {
    if !range.contains(&value) {
        bail!(
            "--{flag} {value} is out of range: give a value from {} to {}",
            range.start(),
            range.end()
        );
    }
    Ok(())
}

/// Refuses a run whose numbers are outside the ranges above.
pub fn check(spec: &RunSpec) -> Result<()> {
    within("size", spec.size as u64, &SIZE)?;
    within("count", spec.mix.count, &COUNT)?;
    within("rate", spec.rate, &RATE)?;
    if let Some(d) = spec.duration {
        // NaN is in no range: refused here too.
        within("duration", d, &DURATION_SECS)?;
    }
    within("threads", spec.threads as u64, &THREADS)?;
    within("unknown", u64::from(spec.mix.unknown), &EXTRA_FLOWS)?;
    within("wrong-vlan", u64::from(spec.mix.wrong_vlan), &EXTRA_FLOWS)?;
    within("window", spec.window, &WINDOW)?;
    within("timeout", spec.deadline.as_secs(), &TIMEOUT_SECS)?;
    Ok(())
}

/// The frames per flow that `--rate` × `--duration` asks of `flows` flows,
/// refused when above [`COUNT`].
pub fn count_for(rate: u64, secs: f64, flows: usize) -> Result<u64> {
    let per_flow = ((rate as f64 * secs) / flows.max(1) as f64).ceil().max(1.0);
    if per_flow > *COUNT.end() as f64 {
        bail!(
            "--rate {rate} for {secs} s over {flows} flows is {per_flow} frames per flow, \
             more than {}; lower --rate or --duration",
            COUNT.end()
        );
    }
    Ok(per_flow as u64)
}

/// The value parser of `--duration`: seconds within [`DURATION_SECS`].
pub fn parse_duration(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if DURATION_SECS.contains(&d) => Ok(d),
        _ => Err(format!(
            "{s:?} is not a number of seconds from {} to {}",
            DURATION_SECS.start(),
            DURATION_SECS.end()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{mix::MixSpec, Generator};

    fn spec() -> RunSpec {
        RunSpec {
            mix: MixSpec {
                networks: Vec::new(),
                count: 1000,
                unknown: 0,
                wrong_vlan: 0,
            },
            generator: Generator::Auto,
            device: None,
            netns: None,
            size: 60,
            rate: 0,
            duration: None,
            threads: 1,
            window: 128,
            deadline: std::time::Duration::from_secs(120),
        }
    }

    #[test]
    fn the_defaults_and_the_ends_of_every_range_pass() {
        check(&spec()).unwrap();
        let mut s = spec();
        (s.size, s.mix.count, s.rate, s.duration, s.threads) =
            (1514, 1_000_000_000, 100_000_000, Some(3600.0), 1024);
        (s.mix.unknown, s.mix.wrong_vlan, s.window) = (4096, 4096, 256);
        s.deadline = std::time::Duration::from_secs(86_400);
        check(&s).unwrap();
    }

    #[test]
    fn every_number_out_of_range_is_refused_by_name() {
        type Set = fn(&mut RunSpec);
        let cases: Vec<(Set, &str)> = vec![
            (
                |s| s.size = 100_000,
                "--size 100000 is out of range: give a value from 60 to 1514",
            ),
            (
                |s| s.size = 59,
                "--size 59 is out of range: give a value from 60 to 1514",
            ),
            (
                |s| s.mix.count = 0,
                "--count 0 is out of range: give a value from 1 to 1000000000",
            ),
            (
                |s| s.rate = 100_000_001,
                "--rate 100000001 is out of range: give a value from 0 to 100000000",
            ),
            (
                |s| s.duration = Some(f64::NAN),
                "--duration NaN is out of range: give a value from 0.001 to 3600",
            ),
            (
                |s| s.duration = Some(0.0),
                "--duration 0 is out of range: give a value from 0.001 to 3600",
            ),
            (
                |s| s.threads = 0,
                "--threads 0 is out of range: give a value from 1 to 1024",
            ),
            (
                |s| s.mix.unknown = u32::MAX,
                "--unknown 4294967295 is out of range: give a value from 0 to 4096",
            ),
            (
                |s| s.mix.wrong_vlan = 4097,
                "--wrong-vlan 4097 is out of range: give a value from 0 to 4096",
            ),
            (
                |s| s.window = 0,
                "--window 0 is out of range: give a value from 1 to 256",
            ),
            (
                |s| s.deadline = std::time::Duration::ZERO,
                "--timeout 0 is out of range: give a value from 1 to 86400",
            ),
        ];
        for (set, want) in cases {
            let mut s = spec();
            set(&mut s);
            assert_eq!(check(&s).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn duration_counts_are_bounded() {
        assert_eq!(count_for(1000, 2.0, 4).unwrap(), 500);
        assert_eq!(count_for(1, 0.001, 4).unwrap(), 1);
        assert_eq!(
            count_for(100_000_000, 3600.0, 1).unwrap_err().to_string(),
            "--rate 100000000 for 3600 s over 1 flows is 360000000000 frames per flow, \
             more than 1000000000; lower --rate or --duration"
        );
        assert_eq!(parse_duration("2.5"), Ok(2.5));
        for bad in ["0", "-1", "NaN", "inf", "3601", "x"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
