//! `--metrics-addr`: where the exporter listens. IP addresses only (no name
//! lookups), plus `localhost:PORT` and `:PORT`, both of which mean
//! 127.0.0.1: the exporter is reachable from other hosts only when an
//! address is given.
use std::net::{Ipv4Addr, SocketAddr};

const FORMS: &str = "use ADDR:PORT, [IPv6]:PORT, localhost:PORT or :PORT, e.g. 127.0.0.1:9435";

fn port(s: &str, p: &str) -> Result<u16, String> {
    p.parse::<u16>().map_err(|_| {
        format!("invalid port {p:?} in {s:?}: give a port from 0 to 65535 (0: any free port)")
    })
}

/// Parses a `--metrics-addr` value.
pub fn parse(s: &str) -> Result<SocketAddr, String> {
    if let Some(p) = s.strip_prefix(':').filter(|p| !p.contains(':')) {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port(s, p)?)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, p)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} has no port; {FORMS}"));
    };
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port(s, p)?)));
    }
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<std::net::IpAddr>().is_ok() || host.contains(':') {
        // A valid address with a bad port, or an IPv6 address without
        // brackets.
        if host.contains(':') && !host.starts_with('[') {
            return Err(format!(
                "{s:?}: put an IPv6 address in brackets, e.g. [::1]:9435"
            ));
        }
        port(s, p)?;
    }
    Err(format!(
        "{host:?} is not an IP address (mvnet looks up no host names but localhost); {FORMS}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_form() {
        let ok = |s: &str| parse(s).unwrap().to_string();
        assert_eq!(ok("127.0.0.1:9435"), "127.0.0.1:9435");
        assert_eq!(ok("0.0.0.0:80"), "0.0.0.0:80");
        assert_eq!(ok("[::1]:9435"), "[::1]:9435");
        assert_eq!(ok("[::]:0"), "[::]:0");
        assert_eq!(ok("localhost:9435"), "127.0.0.1:9435");
        assert_eq!(ok("LocalHost:1"), "127.0.0.1:1");
        assert_eq!(ok(":9435"), "127.0.0.1:9435");
        assert_eq!(ok(":65535"), "127.0.0.1:65535");
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(
            parse(":65536").unwrap_err(),
            "invalid port \"65536\" in \":65536\": give a port from 0 to 65535 (0: any free port)"
        );
        assert_eq!(
            parse("localhost:x").unwrap_err(),
            "invalid port \"x\" in \"localhost:x\": give a port from 0 to 65535 (0: any free port)"
        );
        assert_eq!(
            parse("127.0.0.1:-1").unwrap_err(),
            "invalid port \"-1\" in \"127.0.0.1:-1\": give a port from 0 to 65535 (0: any free port)"
        );
        assert_eq!(
            parse("127.0.0.1").unwrap_err(),
            format!("\"127.0.0.1\" has no port; {FORMS}")
        );
        assert_eq!(
            parse("::1:9435").unwrap_err(),
            "\"::1:9435\": put an IPv6 address in brackets, e.g. [::1]:9435"
        );
        assert_eq!(
            parse("example.com:9435").unwrap_err(),
            format!(
                "\"example.com\" is not an IP address (mvnet looks up no host names but localhost); {FORMS}"
            )
        );
        assert!(parse("").is_err());
        assert!(parse(":").is_err());
    }
}
