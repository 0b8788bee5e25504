//! [`VerifyRequest`]: what a caller knows about the request a token came
//! with — the tenant it names, the client's address, what it costs.

use std::net::IpAddr;

use crate::limit::Costs;

/// The request a token came with, for [`Keyward::verify_with`](crate::Keyward::verify_with).
/// `Copy` and borrowed: building one allocates nothing.
///
/// ```
/// use keyward::VerifyRequest;
///
/// let peer = "203.0.113.7".parse()?;
/// let request = VerifyRequest::new()
///     .tenant("agency/loc1")
///     .client_ip(peer)
///     .cost(5)
///     .limit_cost("requests", 1);
/// # let _ = request;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub struct VerifyRequest<'a> {
    pub(crate) tenant: Option<&'a str>,
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) cost: u32,
    pub(crate) by_name: &'a [(&'a str, u32)],
    /// One pair set by `limit_cost`, kept inline so that it borrows
    /// nothing.
    one: Option<(&'a str, u32)>,
}

impl Default for VerifyRequest<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> VerifyRequest<'a> {
    /// A request that names no tenant and no client address, costing 1.
    pub const fn new() -> Self {
        Self {
            tenant: None,
            client_ip: None,
            cost: 1,
            by_name: &[],
            one: None,
        }
    }

    /// The key must belong to `tenant` or, with nested tenants, to an
    /// ancestor of it (see [`Keyward::verify_for_tenant`](crate::Keyward::verify_for_tenant)).
    pub const fn tenant(mut self, tenant: &'a str) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// The client's address, checked against the key's
    /// [`IpAllowlist`](crate::IpAllowlist). A key with an allowlist is
    /// refused ([`VerifyError::IpNotAllowed`](crate::VerifyError::IpNotAllowed))
    /// when no address is given: it fails closed.
    pub const fn client_ip(mut self, addr: IpAddr) -> Self {
        self.client_ip = Some(addr);
        self
    }

    /// What the request costs (default 1): the uses a usage-limited key
    /// spends, and what each of the key's named limits is charged. A key's
    /// own rate limit and its tenant's quota count requests, whatever
    /// their cost. A cost of 0 checks the key without spending anything.
    pub const fn cost(mut self, cost: u32) -> Self {
        self.cost = cost;
        self
    }

    /// What the request costs the named limit `name`, instead of
    /// [`VerifyRequest::cost`]: e.g. `requests` 1 and `tokens` 1,500.
    /// For more than one name, see [`VerifyRequest::limit_costs`].
    pub const fn limit_cost(mut self, name: &'a str, cost: u32) -> Self {
        self.one = Some((name, cost));
        self
    }

    /// What the request costs each named limit listed, instead of
    /// [`VerifyRequest::cost`] (a name in [`VerifyRequest::limit_cost`]
    /// comes first).
    pub const fn limit_costs(mut self, costs: &'a [(&'a str, u32)]) -> Self {
        self.by_name = costs;
        self
    }

    /// The tenant the request names.
    pub fn tenant_name(&self) -> Option<&'a str> {
        self.tenant
    }

    /// The client address the request carries.
    pub fn client_addr(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// The costs as the limiter reads them.
    pub(crate) fn costs(&self) -> Costs<'a> {
        Costs {
            cost: self.cost,
            by_name: self.by_name,
            one: self.one,
        }
    }
}
