//! Where a reader is: the `country` dimension, an ISO 3166-1 alpha-2 code,
//! `ZZ` when unknown.
//!
//! # The rule
//!
//! 1. A country header set by a trusted proxy (`CF-IPCountry`,
//!    `CloudFront-Viewer-Country`, or the one named by
//!    `server.country_header`) wins. The caller passes it only when the
//!    peer is in `trusted_proxies` — the rule of `X-Forwarded-For` — so a
//!    client cannot choose its country by sending the header itself.
//!    Exactly two ASCII letters are taken (uppercased); Cloudflare's `XX`
//!    (no data) and `T1` (Tor) are `ZZ`; anything else is ignored, and the
//!    address decides.
//! 2. Otherwise the client address, looked up in the Regional Internet
//!    Registries' delegated statistics as shipped inside the `iptocc` crate
//!    (compiled in with `include_bytes!`; nothing is read or downloaded at
//!    run time). Loopback, private (RFC 1918, `fc00::/7`), link-local,
//!    shared (CGNAT, `100.64.0.0/10`), documentation, benchmarking,
//!    multicast and reserved ranges are `ZZ` before the lookup, so they
//!    never depend on the data; an address no registry has delegated is
//!    `ZZ` too. The registries name the country a block was *delegated*
//!    to, which is where it is used for most addresses (a mobile carrier's
//!    or a national ISP's), less so for a multinational's or a VPN's. RIPE
//!    delegates a few blocks to `EU`, ISO's exceptionally reserved code for
//!    the European Union; it is kept as the registry says.
//!
//! # Cost
//!
//! No allocation, no lock, no I/O: a header is a few byte comparisons; an
//! address is a match on its first octet (IPv4) or a few mask comparisons
//! (IPv6), then `iptocc`'s lookup (a bucket by the top 16 bits, then a
//! binary search over a few sorted range starts). `benches/hot_path.rs`
//! (group `country`) measures it: 6–30 ns.
//!
//! The address itself is never kept: only the two letters leave here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An ISO 3166-1 alpha-2 code: two uppercase ASCII letters, `ZZ` when the
/// country is unknown.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

/// Every pair of uppercase ASCII letters, `AA` to `ZZ`, in order: a code's
/// text is a slice of it, so [`Country::as_str`] is `&'static` without a
/// table of names or `unsafe`.
const LETTER_PAIRS: [u8; 26 * 26 * 2] = {
    let mut pairs = [0; 26 * 26 * 2];
    let mut i = 0;
    while i < 26 * 26 {
        pairs[2 * i] = b'A' + (i / 26) as u8;
        pairs[2 * i + 1] = b'A' + (i % 26) as u8;
        i += 1;
    }
    pairs
};
const PAIRS: &str = match std::str::from_utf8(&LETTER_PAIRS) {
    Ok(text) => text,
    Err(_) => panic!("ASCII letters are UTF-8"),
};

impl Country {
    /// The country is not known: a private, reserved or undelegated
    /// address, or a proxy that said it does not know.
    pub const UNKNOWN: Country = Country(*b"ZZ");

    /// The code of `text` if it is exactly two ASCII letters, uppercased.
    pub const fn from_code(text: &[u8]) -> Option<Country> {
        match text {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    /// A trusted proxy's country header: two ASCII letters, uppercased,
    /// with Cloudflare's `XX` (unknown) and `T1` (Tor) as [`UNKNOWN`];
    /// `None` for anything else, which the caller ignores.
    ///
    /// [`UNKNOWN`]: Country::UNKNOWN
    pub fn from_header(value: &str) -> Option<Country> {
        let value = value.as_bytes();
        if value.eq_ignore_ascii_case(b"XX") || value.eq_ignore_ascii_case(b"T1") {
            return Some(Country::UNKNOWN);
        }
        Country::from_code(value)
    }

    /// The country an address was delegated to by its registry, or
    /// [`UNKNOWN`] for special-purpose and undelegated addresses. An
    /// IPv4-mapped IPv6 address is looked up as the IPv4 address it
    /// carries.
    ///
    /// [`UNKNOWN`]: Country::UNKNOWN
    pub fn of_address(ip: IpAddr) -> Country {
        let delegated = match ip {
            IpAddr::V4(v4) => country_of_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => country_of_v4(v4),
                None if is_special_v6(v6) => None,
                None => iptocc::country_code(v6),
            },
        };
        delegated
            .and_then(|code| Country::from_code(code.as_bytes()))
            .unwrap_or(Country::UNKNOWN)
    }

    /// The two letters.
    pub const fn code(self) -> [u8; 2] {
        self.0
    }

    /// The code's place among the 26 × 26 letter pairs, `AA` = 0 to
    /// `ZZ` = 675: a breakdown's fixed slot (`count::breakdown`'s
    /// `FIXED_SLOTS` keeps 26 × 26 for the country).
    pub const fn index(self) -> u16 {
        let [a, b] = self.0;
        (a - b'A') as u16 * 26 + (b - b'A') as u16
    }

    /// The two letters as text, `'static` (a slice of every letter pair).
    pub fn as_str(self) -> &'static str {
        let i = usize::from(self.index());
        &PAIRS[2 * i..2 * i + 2]
    }

    /// Whether this is [`Country::UNKNOWN`].
    pub fn is_unknown(self) -> bool {
        self == Country::UNKNOWN
    }
}

impl std::fmt::Display for Country {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Country {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

/// A hit's country: the trusted proxy's `header` when it holds a code (see
/// [`Country::from_header`]), else the registry's answer for the client
/// address `ip`. The caller passes `header` only when the peer is a
/// trusted proxy. Never allocates.
pub fn country(header: Option<&str>, ip: IpAddr) -> Country {
    header
        .and_then(Country::from_header)
        .unwrap_or_else(|| Country::of_address(ip))
}

fn country_of_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if is_special_v4(ip) {
        None
    } else {
        iptocc::country_code(ip)
    }
}

/// IPv6 ranges that are no country's, as (network, prefix length).
const SPECIAL_V6: [(u128, u32); 7] = [
    (0, 127),                                        // :: and ::1
    (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96), // 64:ff9b::/96, NAT64
    (0x0100_0000_0000_0000_0000_0000_0000_0000, 64), // 100::/64, discard
    (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // 2001:db8::/32, documentation
    (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),  // fc00::/7, unique local
    (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10), // fe80::/10, link-local
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8),  // ff00::/8, multicast
];

/// IPv4 ranges that are no country's (IANA's special-purpose registry,
/// RFC 6890). A match on the first octet, not a scan of a table: most
/// addresses are public and leave at the first comparison.
fn is_special_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    match a {
        // 0.0.0.0/8 "this network", 10.0.0.0/8 private, 127.0.0.0/8
        // loopback, 224.0.0.0/4 multicast, 240.0.0.0/4 reserved (and the
        // broadcast address).
        0 | 10 | 127 | 224..=255 => true,
        // 100.64.0.0/10, shared address space (CGNAT).
        100 => b & 0xc0 == 64,
        // 169.254.0.0/16, link-local.
        169 => b == 254,
        // 172.16.0.0/12, private.
        172 => b & 0xf0 == 16,
        // 192.0.0.0/24 IETF protocol assignments, 192.0.2.0/24
        // documentation, 192.168.0.0/16 private.
        192 => (b == 0 && (c == 0 || c == 2)) || b == 168,
        // 198.18.0.0/15 benchmarking, 198.51.100.0/24 documentation.
        198 => b & 0xfe == 18 || (b == 51 && c == 100),
        // 203.0.113.0/24, documentation.
        203 => b == 0 && c == 113,
        _ => false,
    }
}

fn is_special_v6(ip: Ipv6Addr) -> bool {
    let ip = u128::from(ip);
    SPECIAL_V6
        .iter()
        .any(|&(net, len)| (ip ^ net) >> (128 - len) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(ip: &str) -> &'static str {
        Country::of_address(ip.parse().expect("an address")).as_str()
    }

    /// Well-known, long-standing delegations, so a refresh of the
    /// registry data leaves them alone.
    #[test]
    fn addresses_are_looked_up_in_the_registry_data() {
        for (ip, code, whose) in [
            ("14.160.0.1", "VN", "VNPT"),
            ("113.160.0.1", "VN", "VNPT"),
            ("171.224.0.1", "VN", "Viettel"),
            ("27.72.0.1", "VN", "Viettel"),
            ("2001:ee0::1", "VN", "VNPT"),
            ("2402:800::1", "VN", "Viettel"),
            ("8.8.8.8", "US", "Google Public DNS"),
            ("2001:4860:4860::8888", "US", "Google Public DNS"),
            ("1.0.16.1", "JP", "APNIC's Japanese block"),
            ("202.12.27.33", "JP", "WIDE, the M root server"),
            ("2001:200::1", "JP", "WIDE"),
            ("193.99.144.80", "DE", "Heise"),
            ("2003::1", "DE", "Deutsche Telekom"),
            ("77.88.8.8", "RU", "Yandex DNS"),
            ("200.160.2.3", "BR", "NIC.br"),
            ("::ffff:8.8.8.8", "US", "Google Public DNS, IPv4-mapped"),
        ] {
            assert_eq!(of(ip), code, "{ip} ({whose})");
        }
    }

    fn is_special(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => is_special_v4(v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(is_special_v6(v6), is_special_v4),
        }
    }

    /// Every special-purpose range is `ZZ`, at its first and last address,
    /// and is caught by luot's own table before the lookup (the shipped
    /// data has none of them today, so the outcome alone would not show
    /// that the table holds).
    #[test]
    fn special_addresses_are_unknown_whatever_the_data() {
        for ip in [
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.0.0",
            "169.254.255.255",
            "172.16.0.0",
            "172.31.255.255",
            "192.0.0.0",
            "192.0.0.255",
            "192.0.2.0",
            "192.0.2.255",
            "192.168.0.0",
            "192.168.255.255",
            "198.18.0.0",
            "198.19.255.255",
            "198.51.100.0",
            "198.51.100.255",
            "203.0.113.0",
            "203.0.113.255",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.0",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:10.1.2.3",
            "::ffff:127.0.0.1",
            "64:ff9b::808:808",
            "100::1",
            "2001:db8::",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            "fc00::",
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe80::1",
            "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "ff02::1",
        ] {
            assert_eq!(of(ip), "ZZ", "{ip}");
            assert!(is_special(ip.parse().unwrap()), "{ip} is not in the table");
        }
    }

    #[test]
    fn undelegated_addresses_are_unknown() {
        // Space IANA has given no registry (3fff::/20 is documentation
        // since RFC 9637, outside luot's table).
        for ip in ["4000::1", "3fff:ffff::1"] {
            assert_eq!(of(ip), "ZZ", "{ip}");
            assert!(!is_special(ip.parse().unwrap()), "{ip}");
        }
    }

    /// The special ranges end where they should: the neighbours just
    /// outside them are delegated addresses with a country.
    #[test]
    fn special_ranges_do_not_swallow_their_neighbours() {
        for ip in [
            "1.0.0.1",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.1",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "223.255.255.1",
        ] {
            assert!(!is_special(ip.parse().unwrap()), "{ip}");
            assert_ne!(of(ip), "ZZ", "{ip}");
        }
        for ip in ["2001:db7:ffff::1", "2001:db9::1", "fbff::1", "fec0::1"] {
            assert!(!is_special(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_trusted_header_wins_over_the_address() {
        let google: IpAddr = "8.8.8.8".parse().unwrap();
        let private: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(country(Some("VN"), google).as_str(), "VN");
        assert_eq!(country(Some("de"), private).as_str(), "DE", "uppercased");
        assert_eq!(country(Some("jP"), private).as_str(), "JP");
        assert_eq!(country(None, google).as_str(), "US");
        assert_eq!(country(None, private).as_str(), "ZZ");
    }

    #[test]
    fn cloudflare_unknown_and_tor_are_unknown() {
        let google: IpAddr = "8.8.8.8".parse().unwrap();
        for value in ["XX", "T1", "xx", "t1"] {
            assert_eq!(country(Some(value), google), Country::UNKNOWN, "{value}");
        }
    }

    #[test]
    fn a_header_that_is_not_two_letters_is_ignored() {
        let google: IpAddr = "8.8.8.8".parse().unwrap();
        for value in [
            "",
            "V",
            "VNM",
            " VN",
            "VN ",
            "V1",
            "12",
            "V-",
            "Việt",
            "ÀB",
            "US,VN",
            "\u{0}\u{0}",
        ] {
            assert_eq!(country(Some(value), google).as_str(), "US", "{value:?}");
        }
    }

    #[test]
    fn codes_read_back_as_text() {
        assert_eq!(Country::UNKNOWN.as_str(), "ZZ");
        assert!(Country::UNKNOWN.is_unknown());
        let aa = Country::from_code(b"aa").unwrap();
        assert_eq!((aa.as_str(), aa.code()), ("AA", *b"AA"));
        let vn = Country::from_code(b"VN").unwrap();
        assert_eq!((vn.as_str(), vn.to_string()), ("VN", "VN".to_string()));
        assert_eq!(format!("{vn:?}"), "Country(VN)");
        assert!(!vn.is_unknown());
        assert_eq!(PAIRS.len(), 26 * 26 * 2);
        assert_eq!((aa.index(), vn.index()), (0, 21 * 26 + 13));
        assert_eq!(Country::UNKNOWN.index(), 26 * 26 - 1);
    }
}
