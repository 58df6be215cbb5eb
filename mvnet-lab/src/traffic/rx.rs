//! A cheap running count of frames an interface received, for pacing a
//! generator while traffic runs: `/proc/net/dev` of the interface's
//! namespace, opened once from inside it and re-read through the same file
//! (a few microseconds, against a netlink round trip per poll). Reports use
//! the netlink counters; this only tells the sender how far the receiver is.
use std::{
    fs::File,
    io::{Read as _, Seek as _},
};

use anyhow::{bail, Context as _, Result};

use mvnet::netns::NetNs;

pub struct RxCounter {
    file: File,
    iface: String,
    buf: String,
}

impl RxCounter {
    /// Opens the counter of `iface` in `ns`.
    pub fn open(ns: &NetNs, iface: &str) -> Result<RxCounter> {
        let file = ns
            .run(|| File::open("/proc/thread-self/net/dev"))?
            .context("opening /proc/net/dev in the endpoint's namespace")?;
        let mut c = RxCounter {
            file,
            iface: iface.to_owned(),
            buf: String::new(),
        };
        c.read()?;
        Ok(c)
    }

    /// Frames received so far (rx_packets).
    pub fn read(&mut self) -> Result<u64> {
        self.buf.clear();
        self.file.rewind()?;
        self.file.read_to_string(&mut self.buf)?;
        match parse(&self.buf, &self.iface) {
            Some(n) => Ok(n),
            None => bail!("{} not in /proc/net/dev", self.iface),
        }
    }
}

/// rx_packets of `iface` in the text of /proc/net/dev.
fn parse(text: &str, iface: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name.trim() != iface {
            return None;
        }
        rest.split_whitespace().nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  \
            eth0:   60000    1000    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n";
        assert_eq!(super::parse(text, "eth0"), Some(1000));
        assert_eq!(super::parse(text, "eth1"), None);
    }
}
