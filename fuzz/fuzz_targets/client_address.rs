//! What decides where a request comes from: `IpAllowlist` parsing and
//! `ClientAddress` reading forwarding headers. Neither panics; an
//! allowlist that parses round-trips through its `Display` and serde
//! forms and allows the first address of each of its networks; a client
//! address is the peer unless the peer is a trusted proxy, and is then
//! an address written in the header that no trusted proxy owns (or the
//! left-most hop when every hop is trusted), checked against a naive
//! right-to-left reading of the header.
//!
//! Input: byte 0 picks the header (bit 0: `X-Forwarded-For` or
//! `Forwarded`) and whether the peer is trusted (bit 1); the rest, split
//! at the first newline, is an allowlist and then the header's value
//! (further newlines separate field lines).

#![no_main]

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use keyward::http::{ClientAddress, ProxyHeader};
use keyward::IpAllowlist;
use libfuzzer_sys::fuzz_target;

fn trusted() -> Vec<ipnet::IpNet> {
    vec![
        "10.0.0.0/8".parse().expect("net"),
        "::1/128".parse().expect("net"),
    ]
}

fn is_trusted(addr: IpAddr) -> bool {
    trusted().iter().any(|n| n.contains(&addr.to_canonical()))
}

/// Any address a piece of a header could be written as: bare, with a
/// port, bracketed, quoted, after `for=`.
fn naive_address(piece: &str) -> Option<IpAddr> {
    let mut p = piece.trim();
    if p.len() > 4 && p[..4].eq_ignore_ascii_case("for=") {
        p = p[4..].trim();
    }
    let p = p.trim_matches('"');
    if let Ok(a) = p.parse::<IpAddr>() {
        return Some(a);
    }
    if let Ok(s) = p.parse::<std::net::SocketAddr>() {
        return Some(s.ip());
    }
    p.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

fn check_allowlist(text: &str) {
    let Ok(list) = text.parse::<IpAllowlist>() else {
        return;
    };
    let again: IpAllowlist = list.to_string().parse().expect("Display parses back");
    assert_eq!(again, list);
    let json = serde_json::to_string(&list).expect("serializes");
    let back: IpAllowlist = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, list);
    for net in list.networks() {
        assert!(list.allows(net.network()), "{net} allows its own address");
    }
    assert!(list.is_within(&list));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (allow, header) = text.split_once('\n').unwrap_or((&text, ""));
    check_allowlist(allow);

    let (name, kind) = if mode & 1 == 0 {
        ("x-forwarded-for", ProxyHeader::XForwardedFor)
    } else {
        ("forwarded", ProxyHeader::Forwarded)
    };
    let mut headers = HeaderMap::new();
    for line in header.split('\n') {
        if let Ok(v) = HeaderValue::from_str(line) {
            headers.append(name, v);
        }
    }
    let peer: IpAddr = if mode & 2 == 0 {
        "203.0.113.1".parse().expect("address")
    } else {
        "10.1.2.3".parse().expect("address")
    };
    // Without trusted proxies: always the peer.
    assert_eq!(
        ClientAddress::peer().resolve(Some(peer), &headers),
        Some(peer)
    );
    let behind = ClientAddress::behind_proxies(trusted(), kind);
    let got = behind.resolve(Some(peer), &headers);
    if !is_trusted(peer) {
        assert_eq!(got, Some(peer));
        return;
    }
    if let Some(addr) = got {
        let written = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split([',', ';']))
            .filter_map(naive_address)
            .any(|a| a.to_canonical() == addr);
        // Untrusted: it was written in the header. Trusted: every hop was
        // trusted (or there was no header), and it is the left-most or
        // the peer.
        assert!(written || addr == peer, "{addr} came from nowhere");
        if is_trusted(addr) {
            assert!(
                headers.get_all(name).iter().count() == 0 || written,
                "a trusted answer must be a hop"
            );
        }
    }
});
