//! The generator for kernels without pktgen: an AF_PACKET socket with a
//! TX ring (TPACKET_V2) on the sending device. Frames are written into the
//! shared ring in batches and flushed with one `sendto` each, through the
//! device's queueing (no PACKET_QDISC_BYPASS).
//!
//! Exactness needs the receiver never to be outrun: a veth peer drops what
//! does not fit its ring (256 frames) or backlog. So besides pacing to a
//! rate, the sender keeps at most `window` frames in flight, counting as
//! landed what the receiver's own counter (`progress`) reports. Every loop
//! is bounded by the frame count and by a deadline.
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use mvnet::{
    netns::NetNs,
    sys::{
        net::if_index,
        packet::{TxRing, TP_STATUS_AVAILABLE, TP_STATUS_WRONG_FORMAT, TX_DATA_OFFSET},
    },
};

const FRAME_SIZE: u32 = 2048;
const BLOCK_SIZE: u32 = 1 << 16;
const RING_FRAMES: u32 = 256;
/// Frames flushed per `sendto`, at most.
const BATCH: u64 = 64;
/// A receiver that sees nothing for this long is not connected.
const STALL: Duration = Duration::from_secs(3);

/// What to send and how fast.
pub struct Plan<'a> {
    /// One frame per flow.
    pub frames: &'a [Vec<u8>],
    /// Frames to send per flow; flows are interleaved round-robin.
    pub counts: &'a [u64],
    /// Frames per second over all flows (0: as fast as the window allows).
    pub rate: u64,
    /// Frames sent but not yet seen by `progress`, at most.
    pub window: u64,
    /// Give up (and report what was sent) after this long.
    pub deadline: Duration,
}

/// What a run sent.
#[derive(Clone, Debug, Default)]
pub struct Sent {
    pub per_flow: Vec<u64>,
    /// When the sending loop started (after the ring was set up): the
    /// start of a measured run.
    pub started: Option<Instant>,
    pub elapsed: Duration,
    /// CPU time of the sending thread, which includes the receive work
    /// the kernel does inline in its context (softirqs run on return).
    pub cpu: Duration,
    /// Whether the deadline cut the run short.
    pub timed_out: bool,
}

/// Opens the TX ring on `iface` (in the calling thread's namespace).
fn open_ring(iface: &str) -> Result<TxRing> {
    let Some(ifindex) = if_index(iface) else {
        bail!("interface {iface} not found in the sending namespace; list them with `ip link`");
    };
    TxRing::open(ifindex as i32, RING_FRAMES, FRAME_SIZE, BLOCK_SIZE)
        .with_context(|| format!("setting up the TX ring on {iface}"))
}

/// Sends `plan` out of `iface` (in `ns`, or mvnet's own namespace).
/// `progress` returns the receiver's running count of frames it has seen
/// (any origin: only differences matter).
pub fn send(
    ns: Option<&NetNs>,
    iface: &str,
    plan: &Plan<'_>,
    mut progress: impl FnMut() -> u64 + Send,
) -> Result<Sent> {
    if plan.frames.len() != plan.counts.len() {
        bail!("one count per frame");
    }
    if let Some(f) = plan
        .frames
        .iter()
        .find(|f| f.len() + TX_DATA_OFFSET > FRAME_SIZE as usize)
    {
        bail!(
            "frames of {} bytes do not fit the TX ring's {FRAME_SIZE}-byte slots",
            f.len()
        );
    }
    let iface = iface.to_owned();
    mvnet::netns::run_in(ns, move || -> Result<Sent> {
        let ring = open_ring(&iface)?;
        let total: u64 = plan.counts.iter().sum();
        let window = plan.window.max(1);
        let mut left = plan.counts.to_vec();
        let mut sent = Sent {
            per_flow: vec![0; plan.frames.len()],
            ..Sent::default()
        };
        // Which flow each ring slot carries.
        let mut slot_flow = vec![0usize; RING_FRAMES as usize];
        let mut next_flow = 0usize;
        let (mut head, mut done) = (0u64, 0u64);
        let base = progress();
        let mut landed = 0u64;
        let start = Instant::now();
        sent.started = Some(start);
        let mut moved = start;
        let cpu_start = thread_cpu();
        while done < total {
            if start.elapsed() > plan.deadline {
                sent.timed_out = true;
                break;
            }
            // Room by the window: re-read the receiver only when needed.
            // Frames written to the ring (`head`) count as in flight.
            let mut room = (landed + window).saturating_sub(head);
            if room < BATCH.min(total - head) {
                let now = progress().wrapping_sub(base);
                if now != landed {
                    moved = Instant::now();
                }
                landed = now;
                room = (landed + window).saturating_sub(head);
                if room == 0 && head == done {
                    if moved.elapsed() > STALL {
                        bail!(
                            "the receiver has seen {landed} of {done} frames sent out of {iface} \
                             and none for {STALL:?}: is {iface} connected to the device whose \
                             counter paces the sender?"
                        );
                    }
                    std::thread::sleep(Duration::from_micros(20));
                    continue;
                }
            }
            // Room by the rate.
            if plan.rate > 0 {
                let due = (start.elapsed().as_secs_f64() * plan.rate as f64) as u64;
                let allowed = due.saturating_sub(head);
                if allowed == 0 && head == done {
                    let wait = (head + 1) as f64 / plan.rate as f64 - start.elapsed().as_secs_f64();
                    std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.0, 0.01)));
                    continue;
                }
                room = room.min(allowed);
            }
            let batch = room.min(BATCH).min(total - head);
            let mut filled = 0;
            while filled < batch {
                if ring.status(head) != TP_STATUS_AVAILABLE {
                    break;
                }
                while left[next_flow] == 0 {
                    next_flow = (next_flow + 1) % left.len();
                }
                ring.fill(head, &plan.frames[next_flow]);
                slot_flow[(head % RING_FRAMES as u64) as usize] = next_flow;
                left[next_flow] -= 1;
                next_flow = (next_flow + 1) % left.len();
                head += 1;
                filled += 1;
            }
            let flushed = ring.flush();
            // Slots the kernel took are available again; any it left are
            // still marked and go out with the next flush.
            let mut i = done;
            while i < head {
                match ring.status(i) {
                    TP_STATUS_AVAILABLE => {
                        sent.per_flow[slot_flow[(i % RING_FRAMES as u64) as usize]] += 1;
                        i += 1;
                    }
                    TP_STATUS_WRONG_FORMAT => {
                        bail!("the kernel refused a frame on {iface} (TP_STATUS_WRONG_FORMAT)")
                    }
                    _ => break,
                }
            }
            done = i;
            match flushed {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR)
                    ) =>
                {
                    std::thread::sleep(Duration::from_micros(50))
                }
                Err(e) => return Err(e).context(format!("sending on {iface}")),
            }
        }
        sent.elapsed = start.elapsed();
        sent.cpu = thread_cpu().saturating_sub(cpu_start);
        // One more look at the receiver before the ring goes: closing a
        // packet socket waits for an RCU grace period (milliseconds), and
        // a caller timing delivery must be able to see the end before it.
        let _ = progress();
        Ok(sent)
    })?
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    mvnet::sys::process::thread_cpu_time()
}
