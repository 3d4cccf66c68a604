//! The address a request comes from, for the per-address abuse limits: the TCP
//! peer, unless the peer is a trusted proxy; then the rightmost `X-Forwarded-For`
//! entry that is not itself a trusted proxy. Entries to the left of that one were
//! written by the client and prove nothing.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;
use std::str::FromStr;

/// Proxies (load balancers, nginx) whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.5`, `::1`) and networks (`10.0.0.0/8`).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in items {
            let item = item.as_ref().trim();
            if item.is_empty() {
                continue;
            }
            let net = match IpNet::from_str(item) {
                Ok(net) => net.trunc(),
                Err(_) => match IpAddr::from_str(item) {
                    Ok(ip) => IpNet::from(canonical(ip)),
                    Err(_) => return Err(format!("not an IP address or CIDR network: {item:?}")),
                },
            };
            nets.push(net);
        }
        Ok(Self(nets))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, from a dual-stack listener) as
/// the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`,
/// `[::1]:5678`); anything else is `None`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = IpAddr::from_str(entry) {
        return Some(ip);
    }
    if let Ok(sock) = std::net::SocketAddr::from_str(entry) {
        return Some(sock.ip());
    }
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    IpAddr::from_str(inner).ok()
}

/// The client address of a request from `peer` with these headers.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut current = canonical(peer);
    if !trusted.contains(current) {
        return current;
    }
    // Several X-Forwarded-For headers are one list, in order.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for entry in entries.iter().rev() {
        // Garbage stops the walk: whoever wrote it cannot be told apart from the
        // client, so the last hop known to be real stands (a trusted proxy: its
        // clients then share one budget, which errs on the safe side).
        let Some(ip) = parse_entry(entry) else {
            return current;
        };
        current = canonical(ip);
        if !trusted.contains(current) {
            return current;
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_and_networks() {
        let t =
            TrustedProxies::parse(&["10.0.0.0/8", " 192.168.1.7 ", "::1", "fd00::/8", ""]).unwrap();
        assert!(t.contains(ip("10.1.2.3")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("fd12::1")));
        assert!(t.contains(ip("::ffff:10.0.0.1")), "IPv4-mapped");
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["proxy.example"]).is_err());
        assert!(TrustedProxies::parse::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn spoofed_header_from_an_untrusted_peer_is_ignored() {
        let none = TrustedProxies::default();
        assert_eq!(
            client_addr(ip("203.0.113.9"), &xff(&["1.2.3.4"]), &none),
            ip("203.0.113.9")
        );
        let t = TrustedProxies::parse(&["10.0.0.1"]).unwrap();
        assert_eq!(
            client_addr(ip("203.0.113.9"), &xff(&["1.2.3.4"]), &t),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_chain_of_proxies_yields_the_rightmost_untrusted_entry() {
        let t = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        // client-written spoof, real client, then two of our proxies.
        let h = xff(&["6.6.6.6, 198.51.100.7", "10.0.0.2,10.0.0.3"]);
        assert_eq!(client_addr(ip("10.0.0.4"), &h, &t), ip("198.51.100.7"));
        // One proxy, one entry.
        assert_eq!(
            client_addr(ip("10.0.0.4"), &xff(&["198.51.100.7"]), &t),
            ip("198.51.100.7")
        );
        // Ports and brackets are tolerated.
        assert_eq!(
            client_addr(ip("10.0.0.4"), &xff(&["198.51.100.7:4444"]), &t),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_addr(ip("10.0.0.4"), &xff(&["[2001:db8::1]:4444"]), &t),
            ip("2001:db8::1")
        );
        // A trusted proxy without the header: the proxy itself.
        assert_eq!(
            client_addr(ip("10.0.0.4"), &HeaderMap::new(), &t),
            ip("10.0.0.4")
        );
        // Every entry trusted: the leftmost.
        assert_eq!(
            client_addr(ip("10.0.0.4"), &xff(&["10.0.0.9, 10.0.0.8"]), &t),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn garbage_entries_stop_the_walk() {
        let t = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        assert_eq!(
            client_addr(ip("10.0.0.4"), &xff(&["unknown"]), &t),
            ip("10.0.0.4")
        );
        assert_eq!(
            client_addr(
                ip("10.0.0.4"),
                &xff(&["198.51.100.7, garbage, 10.0.0.2"]),
                &t
            ),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_addr(ip("10.0.0.4"), &xff(&["198.51.100.7,,"]), &t),
            ip("10.0.0.4")
        );
        // Garbage left of the client's entry does not matter.
        assert_eq!(
            client_addr(ip("10.0.0.4"), &xff(&["<script>, 198.51.100.7"]), &t),
            ip("198.51.100.7")
        );
    }
}
