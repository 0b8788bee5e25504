//! [`ClientAddress`]: which address a request comes from, for keys with
//! an [`IpAllowlist`](crate::IpAllowlist).
//!
//! By default the peer address of the connection (axum's
//! [`ConnectInfo`]; serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`). Forwarding
//! headers are read only behind proxies the host names: a client can
//! write any `X-Forwarded-For` it likes, so a header is believed only as
//! far as trusted proxies wrote it, and the address taken is the
//! right-most one that no trusted proxy added.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderName, FORWARDED};
use http::HeaderMap;
use ipnet::IpNet;

use super::headers::{visible, Headers};

/// The forwarding header a host's proxies write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

/// How to find a request's client address.
///
/// ```
/// use keyward::http::{ClientAddress, ProxyHeader};
///
/// // Behind a load balancer in 10.0.0.0/8 that appends X-Forwarded-For.
/// let client = ClientAddress::behind_proxies(["10.0.0.0/8".parse()?], ProxyHeader::XForwardedFor);
/// # let _ = client;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAddress {
    trusted: Vec<IpNet>,
    header: ProxyHeader,
}

impl ClientAddress {
    /// The peer address of the connection, whatever headers say (the
    /// default).
    pub fn peer() -> Self {
        Self::default()
    }

    /// Behind proxies in `trusted` that write `header`: when the peer is
    /// one of them, the header's hops are read from the right, skipping
    /// trusted proxies, and the first other address is the client. A hop
    /// that is not an address (`unknown`, an obfuscated name, garbage)
    /// ends the search with no address: keys with an allowlist are then
    /// refused.
    ///
    /// The proxies must append their hop to what the client sent (as
    /// load balancers do), and, for `Forwarded`, write quoted values with
    /// any `"` in them escaped (RFC 7239): a proxy that copies a client's
    /// text into a quoted parameter unescaped lets the client write hops.
    pub fn behind_proxies(trusted: impl IntoIterator<Item = IpNet>, header: ProxyHeader) -> Self {
        Self {
            // As allowlists keep them: an IPv4-mapped network is the IPv4
            // network it carries, as addresses are compared.
            trusted: trusted
                .into_iter()
                .map(crate::access::canonical_net)
                .collect(),
            header,
        }
    }

    /// The client address of a request with these extensions (where
    /// axum's `ConnectInfo<SocketAddr>` is) and headers; `None` when the
    /// server does not record peers or a forwarded hop is unreadable.
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn of(&self, extensions: &http::Extensions, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|axum::extract::ConnectInfo(addr)| addr.ip());
        self.resolve(peer, headers)
    }

    /// The client address behind `peer`, from `headers`.
    pub fn resolve(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        self.resolve_in(peer, headers)
    }

    /// [`ClientAddress::resolve`] over any framework's headers.
    pub(crate) fn resolve_in<H: Headers + ?Sized>(
        &self,
        peer: Option<IpAddr>,
        headers: &H,
    ) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let name = match self.header {
            ProxyHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            ProxyHeader::Forwarded => FORWARDED,
        };
        // Every field line, in order, as one list; read from the right.
        let mut last = peer;
        for line in headers.values(&name).rev() {
            let line = visible(line)?;
            let hops = match self.header {
                ProxyHeader::XForwardedFor => line.split(',').map(str::trim).collect(),
                ProxyHeader::Forwarded => forwarded_elements(line)?,
            };
            for hop in hops.into_iter().rev() {
                let addr = match self.header {
                    ProxyHeader::XForwardedFor => parse_hop(hop),
                    ProxyHeader::Forwarded => forwarded_for(hop)?,
                }?;
                let addr = addr.to_canonical();
                if !self.is_trusted(addr) {
                    return Some(addr);
                }
                last = addr;
            }
        }
        // Every hop was a trusted proxy: the left-most is the client.
        Some(last)
    }

    fn is_trusted(&self, addr: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&addr))
    }
}

/// The address of one hop: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`
/// or `[2001:db8::1]:8080`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = hop.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    let inner = hop.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The elements of one `Forwarded` field line (RFC 7239): split at
/// commas outside quoted strings. `None` for an unterminated quote, which
/// no proxy writes.
fn forwarded_elements(line: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in line.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                out.push(line[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    out.push(line[start..].trim());
    Some(out)
}

/// The `for=` address of one `Forwarded` element: `Some(None)` when it
/// is not an address, or the element is not well formed (a quote left
/// open, two `for` parameters); `None` when it has no `for` at all (also
/// refused: a trusted proxy always writes one).
fn forwarded_for(element: &str) -> Option<Option<IpAddr>> {
    let mut found: Option<Option<IpAddr>> = None;
    let mut rest = element;
    while !rest.trim().is_empty() {
        let (pair, tail) = split_pair(rest)?;
        rest = tail;
        // `token "=" value`, nothing around the `=` (RFC 7239).
        let Some((key, value)) = pair.trim().split_once('=') else {
            return Some(None);
        };
        if key.ends_with([' ', '\t']) || value.starts_with([' ', '\t']) {
            return Some(None);
        }
        if key.eq_ignore_ascii_case("for") {
            if found.is_some() {
                return Some(None);
            }
            let value = match value.strip_prefix('"') {
                Some(v) => match v.strip_suffix('"') {
                    Some(inner) if !inner.contains(['"', '\\']) => inner,
                    _ => return Some(None),
                },
                None => value,
            };
            found = Some(parse_hop(value));
        }
    }
    found
}

/// The first `key=value` pair of an element and the rest after its `;`,
/// splitting outside quoted strings; `None` for a quote left open.
fn split_pair(s: &str) -> Option<(&str, &str)> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b';' if !quoted => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    (!quoted).then_some((s, ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn without_trusted_proxies_headers_are_ignored() {
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        let peer = Some(ip("198.51.100.1"));
        assert_eq!(ClientAddress::peer().resolve(peer, &h), peer);
        assert_eq!(ClientAddress::peer().resolve(None, &h), None);
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let lb = ClientAddress::behind_proxies(
            ["10.0.0.0/8".parse().expect("net")],
            ProxyHeader::XForwardedFor,
        );
        // The client wrote a spoofed first hop; the proxy appended the real one.
        let h = headers("x-forwarded-for", &["1.2.3.4, 203.0.113.9", "10.0.0.7"]);
        assert_eq!(
            lb.resolve(Some(ip("10.1.1.1")), &h),
            Some(ip("203.0.113.9"))
        );
        // A peer outside the trusted proxies: its own address, header ignored.
        assert_eq!(
            lb.resolve(Some(ip("198.51.100.1")), &h),
            Some(ip("198.51.100.1"))
        );
        // Garbage where the client should be: no address.
        let bad = headers("x-forwarded-for", &["nonsense"]);
        assert_eq!(lb.resolve(Some(ip("10.1.1.1")), &bad), None);
        // No header behind a trusted proxy: the proxy itself.
        assert_eq!(
            lb.resolve(Some(ip("10.1.1.1")), &HeaderMap::new()),
            Some(ip("10.1.1.1"))
        );
    }

    #[test]
    fn ipv6_ports_and_mapped_addresses() {
        let lb = ClientAddress::behind_proxies(
            [
                "::1/128".parse().expect("net"),
                "127.0.0.0/8".parse().expect("net"),
            ],
            ProxyHeader::XForwardedFor,
        );
        let h = headers("x-forwarded-for", &["[2001:db8::5]:443, 127.0.0.1:9000"]);
        assert_eq!(lb.resolve(Some(ip("::1")), &h), Some(ip("2001:db8::5")));
        // A mapped peer counts as the IPv4 proxy it is.
        let h = headers("x-forwarded-for", &["::ffff:192.0.2.8"]);
        assert_eq!(
            lb.resolve(Some(ip("::ffff:127.0.0.1")), &h),
            Some(ip("192.0.2.8"))
        );
    }

    #[test]
    fn trusted_networks_are_canonical_like_allowlists() {
        // Written as an IPv4-mapped network, the proxy is still trusted:
        // its header is read, not taken for the client.
        let lb = ClientAddress::behind_proxies(
            ["::ffff:10.0.0.0/104".parse().expect("net")],
            ProxyHeader::XForwardedFor,
        );
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(
            lb.resolve(Some(ip("10.1.1.1")), &h),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            lb.resolve(Some(ip("::ffff:10.1.1.1")), &h),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn forwarded_header() {
        let lb = ClientAddress::behind_proxies(
            ["10.0.0.0/8".parse().expect("net")],
            ProxyHeader::Forwarded,
        );
        let h = headers(
            "forwarded",
            &[
                r#"for=1.2.3.4, for="[2001:db8:cafe::17]:4711";proto=https, For=10.0.0.2;by=10.0.0.3"#,
            ],
        );
        assert_eq!(
            lb.resolve(Some(ip("10.0.0.1")), &h),
            Some(ip("2001:db8:cafe::17"))
        );
        let hidden = headers("forwarded", &["for=_hidden"]);
        assert_eq!(lb.resolve(Some(ip("10.0.0.1")), &hidden), None);
        // A comma inside a quoted value (a Host header the client chose)
        // is not a new element: the proxy's own `for` counts.
        let quoted = headers(
            "forwarded",
            &[r#"for=198.51.100.7;host="a,for=192.0.2.99;x=""#],
        );
        assert_eq!(
            lb.resolve(Some(ip("10.0.0.1")), &quoted),
            Some(ip("198.51.100.7"))
        );
        // Two `for` in one element, or a quote left open: no address.
        for bad in [
            "for=192.0.2.1;for=198.51.100.1",
            r#"for="192.0.2.1"#,
            r#"for=1.2.3.4;host="x"#,
            "For\t=192.0.2.1",
            "for= 192.0.2.1",
        ] {
            let h = headers("forwarded", &[bad]);
            assert_eq!(lb.resolve(Some(ip("10.0.0.1")), &h), None, "{bad}");
        }
        // X-Forwarded-For is not read when the proxies write Forwarded.
        let xff = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(lb.resolve(Some(ip("10.0.0.1")), &xff), Some(ip("10.0.0.1")));
    }
}
