//! Where a key may be used from: [`IpAllowlist`], the networks a key
//! accepts requests from, and the rule that reads a client address.
//!
//! An allowlist is checked during a verify against the client address the
//! caller supplies in its [`VerifyRequest`](crate::VerifyRequest); the HTTP
//! layer supplies the peer address, or, behind proxies the host trusts,
//! the right-most address they did not add (see
//! [`http::ClientAddress`](crate::http::ClientAddress)).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most networks one allowlist holds.
pub const MAX_NETWORKS: usize = 100;

/// The networks (IPv4 and IPv6 CIDRs) a key accepts requests from.
///
/// IPv4-mapped IPv6 addresses (`::ffff:203.0.113.7`) count as the IPv4
/// address they carry, in the list and in requests, so a dual-stack
/// listener sees the same client either way. A bare address is a network
/// of one (`/32` or `/128`). Networks are kept in canonical form (host
/// bits cleared), sorted and without duplicates; checking an address
/// allocates nothing.
///
/// ```
/// use keyward::IpAllowlist;
///
/// let list: IpAllowlist = "10.0.0.0/8, 2001:db8::/32".parse()?;
/// assert!(list.allows("10.1.2.3".parse()?));
/// assert!(list.allows("::ffff:10.1.2.3".parse()?));
/// assert!(!list.allows("192.0.2.1".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct IpAllowlist {
    nets: Box<[IpNet]>,
    /// The same networks as `(network, mask)` words, per family, for the
    /// check a verify makes: a mask and a compare each.
    v4: Box<[(u32, u32)]>,
    v6: Box<[(u128, u128)]>,
}

/// An allowlist that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidAllowlist {
    /// An entry is neither a CIDR (`10.0.0.0/8`) nor an address.
    #[error("invalid network {0:?}: write a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or a single address")]
    Network(String),
    /// More than [`MAX_NETWORKS`] networks.
    #[error("an IP allowlist holds at most {MAX_NETWORKS} networks")]
    TooLong,
    /// No network at all: a key that accepts no address would never
    /// work. Leave the allowlist out to accept every address.
    #[error("an IP allowlist needs at least one network (leave it out to accept any address)")]
    Empty,
}

impl IpAllowlist {
    /// The allowlist of `networks`, each a CIDR or a single address.
    ///
    /// # Errors
    /// [`InvalidAllowlist`] naming the first entry that cannot be read,
    /// or an empty or too long list.
    pub fn new<I, S>(networks: I) -> Result<Self, InvalidAllowlist>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nets = Vec::new();
        for n in networks {
            if nets.len() == MAX_NETWORKS {
                return Err(InvalidAllowlist::TooLong);
            }
            nets.push(parse_net(n.as_ref())?);
        }
        Self::from_nets(nets)
    }

    /// The allowlist of parsed networks.
    ///
    /// # Errors
    /// [`InvalidAllowlist::Empty`] or [`InvalidAllowlist::TooLong`].
    pub fn from_nets(nets: impl IntoIterator<Item = IpNet>) -> Result<Self, InvalidAllowlist> {
        let mut nets: Vec<IpNet> = nets.into_iter().map(canonical_net).collect();
        if nets.is_empty() {
            return Err(InvalidAllowlist::Empty);
        }
        nets.sort_unstable();
        nets.dedup();
        if nets.len() > MAX_NETWORKS {
            return Err(InvalidAllowlist::TooLong);
        }
        let v4 = nets
            .iter()
            .filter_map(|n| match n {
                IpNet::V4(n) => Some((u32::from(n.network()), u32::from(n.netmask()))),
                IpNet::V6(_) => None,
            })
            .collect();
        let v6 = nets
            .iter()
            .filter_map(|n| match n {
                IpNet::V6(n) => Some((u128::from(n.network()), u128::from(n.netmask()))),
                IpNet::V4(_) => None,
            })
            .collect();
        Ok(Self {
            nets: nets.into(),
            v4,
            v6,
        })
    }

    /// Whether a request from `addr` is allowed. Allocation-free: one
    /// mask and compare per network of the address's family.
    #[inline]
    pub fn allows(&self, addr: IpAddr) -> bool {
        match addr.to_canonical() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(net, mask)| a & mask == net)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|&(net, mask)| a & mask == net)
            }
        }
    }

    /// Whether every address this list allows, `bound` allows too: what
    /// a manager may give a key when it has an allowlist itself.
    pub fn is_within(&self, bound: &IpAllowlist) -> bool {
        self.nets
            .iter()
            .all(|n| bound.nets.iter().any(|b| b.contains(n)))
    }

    /// The networks, canonical and sorted.
    pub fn networks(&self) -> &[IpNet] {
        &self.nets
    }
}

/// An entry: a CIDR, or an address as a network of one.
fn parse_net(s: &str) -> Result<IpNet, InvalidAllowlist> {
    let s = s.trim();
    let bad = || InvalidAllowlist::Network(s.chars().take(64).collect());
    if s.contains('/') {
        IpNet::from_str(s).map_err(|_| bad())
    } else {
        IpAddr::from_str(s).map(IpNet::from).map_err(|_| bad())
    }
}

/// `net` with host bits cleared, and an IPv4-mapped IPv6 network as the
/// IPv4 network it carries.
pub(crate) fn canonical_net(net: IpNet) -> IpNet {
    let net = net.trunc();
    if let IpNet::V6(v6) = net {
        let mapped_prefix = 96;
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= mapped_prefix) {
            if let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - mapped_prefix) {
                return IpNet::V4(n);
            }
        }
    }
    net
}

impl FromStr for IpAllowlist {
    type Err = InvalidAllowlist;

    /// Networks separated by commas or whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s.split([',', ' ', '\n', '\t']).filter(|p| !p.is_empty()))
    }
}

impl fmt::Debug for IpAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.nets.iter()).finish()
    }
}

impl fmt::Display for IpAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

/// As a list of CIDR strings.
impl Serialize for IpAllowlist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.nets.iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for IpAllowlist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let nets = Vec::<String>::deserialize(d)?;
        Self::new(nets).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn v4_v6_and_mapped_addresses() {
        let list: IpAllowlist = "10.0.0.0/8 2001:db8::/32, 192.0.2.7".parse().expect("list");
        assert!(list.allows(ip("10.255.0.1")));
        assert!(list.allows(ip("::ffff:10.1.1.1")), "mapped counts as v4");
        assert!(list.allows(ip("2001:db8:1::5")));
        assert!(list.allows(ip("192.0.2.7")));
        assert!(!list.allows(ip("192.0.2.8")));
        assert!(!list.allows(ip("11.0.0.1")));
        assert!(!list.allows(ip("2001:db9::1")));
        assert!(!list.allows(ip("::ffff:11.0.0.1")));
    }

    #[test]
    fn mapped_networks_and_host_bits_are_canonical() {
        let a: IpAllowlist = "::ffff:10.0.0.0/104".parse().expect("list");
        let b: IpAllowlist = "10.9.9.9/8".parse().expect("list");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "10.0.0.0/8");
        assert!(a.allows(ip("10.3.3.3")));
    }

    #[test]
    fn bad_entries_are_named_and_bounds_hold() {
        assert_eq!(
            "10.0.0.0/33".parse::<IpAllowlist>(),
            Err(InvalidAllowlist::Network("10.0.0.0/33".into()))
        );
        assert_eq!("".parse::<IpAllowlist>(), Err(InvalidAllowlist::Empty));
        let many: Vec<String> = (0..=MAX_NETWORKS)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        assert_eq!(IpAllowlist::new(&many), Err(InvalidAllowlist::TooLong));
    }

    #[test]
    fn the_mask_check_agrees_with_ipnet() {
        let list: IpAllowlist = "0.0.0.0/0, ::/0, 10.0.0.0/8, 192.0.2.7, 2001:db8::/127"
            .parse()
            .expect("list");
        let only6: IpAllowlist = "::/0".parse().expect("list");
        let only4: IpAllowlist = "0.0.0.0/0".parse().expect("list");
        for a in [
            "10.1.2.3",
            "192.0.2.7",
            "192.0.2.8",
            "::",
            "2001:db8::1",
            "2001:db8::2",
            "::1",
            "255.255.255.255",
            "::ffff:1.2.3.4",
        ] {
            let a = ip(a);
            for l in [&list, &only6, &only4] {
                let model = l.networks().iter().any(|n| n.contains(&a.to_canonical()));
                assert_eq!(l.allows(a), model, "{l} / {a}");
            }
        }
    }

    #[test]
    fn within_is_containment_of_every_network() {
        let wide: IpAllowlist = "10.0.0.0/8, 2001:db8::/32".parse().expect("list");
        let narrow: IpAllowlist = "10.1.0.0/16, 2001:db8:5::/48".parse().expect("list");
        let other: IpAllowlist = "10.1.0.0/16, 192.0.2.0/24".parse().expect("list");
        assert!(narrow.is_within(&wide));
        assert!(!wide.is_within(&narrow));
        assert!(!other.is_within(&wide));
    }

    #[test]
    fn serde_round_trip() {
        let list: IpAllowlist = "10.0.0.0/8, ::1".parse().expect("list");
        let json = serde_json::to_string(&list).expect("json");
        assert_eq!(json, r#"["10.0.0.0/8","::1/128"]"#);
        let back: IpAllowlist = serde_json::from_str(&json).expect("back");
        assert_eq!(back, list);
        assert!(serde_json::from_str::<IpAllowlist>(r#"["nope"]"#).is_err());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, p)| {
                IpNet::V4(ipnet::Ipv4Net::new(a.into(), p).expect("prefix"))
            }),
            (any::<u128>(), 0u8..=128).prop_map(|(a, p)| {
                IpNet::V6(ipnet::Ipv6Net::new(a.into(), p).expect("prefix"))
            }),
        ]
    }

    fn addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
            any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
            any::<u32>().prop_map(|a| IpAddr::V6(std::net::Ipv4Addr::from(a).to_ipv6_mapped())),
        ]
    }

    proptest! {
        /// The mask check agrees with `ipnet`'s containment of the
        /// canonical address, for any networks, including addresses
        /// inside them.
        #[test]
        fn allows_agrees_with_ipnet(nets in prop::collection::vec(net(), 1..12), a in addr(), pick in any::<prop::sample::Index>()) {
            let list = IpAllowlist::from_nets(nets.clone()).expect("list");
            let model = |a: IpAddr| list.networks().iter().any(|n| n.contains(&a.to_canonical()));
            prop_assert_eq!(list.allows(a), model(a));
            // An address inside one of the networks is allowed.
            let inside = list.networks()[pick.index(list.networks().len())].network();
            prop_assert!(list.allows(inside));
            // A list is within itself and within ::/0 + 0.0.0.0/0.
            let all: IpAllowlist = "0.0.0.0/0, ::/0".parse().expect("list");
            prop_assert!(list.is_within(&list) && list.is_within(&all));
        }
    }
}
