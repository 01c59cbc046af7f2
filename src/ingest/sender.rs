//! Who sent a beacon: the client address (the peer, or the right-most
//! untrusted `X-Forwarded-For` hop behind a trusted proxy) and the few
//! headers that count.

use std::net::IpAddr;

use ipnet::IpNet;

use super::classify::ClientHints;
/// The client's address: the peer, or — when the peer is a trusted proxy —
/// the right-most `X-Forwarded-For` hop that is not itself trusted. A spoofed
/// header from an untrusted peer is ignored.
pub fn client_ip<'h>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'h [u8]>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Headers in order, hops within each left to right; walk from the right.
    for header in forwarded_for.rev() {
        let Ok(text) = std::str::from_utf8(header) else {
            return client;
        };
        for hop in text.rsplit(',') {
            let Some(ip) = parse_hop(hop.trim()) else {
                return client;
            };
            client = ip;
            if !is_trusted(&ip) {
                return ip;
            }
        }
    }
    client
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    // "1.2.3.4:5678" and "[::1]:5678" forms.
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    None
}

/// IPv4-mapped IPv6 addresses are the IPv4 client they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Who sent a beacon, from the request's headers.
pub struct Sender<'a> {
    pub ip: IpAddr,
    pub user_agent: &'a [u8],
    /// `DNT: 1` or `Sec-GPC: 1`.
    pub no_track: bool,
    pub origin: Option<&'a str>,
    /// The `Referer` header, used when the beacon names no page.
    pub referer: Option<&'a str>,
    /// The `Sec-CH-UA*` Client Hints, which win over the User-Agent.
    pub hints: ClientHints<'a>,
    /// The country header a trusted proxy set (`server.country_header`,
    /// else `CF-IPCountry`, else `CloudFront-Viewer-Country`); `None` when
    /// the peer is not in `trusted_proxies`, whatever the request says.
    /// `classify::country` reads it.
    pub country: Option<&'a str>,
}
