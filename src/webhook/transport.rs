//! How messages reach endpoints: the [`WebhookTransport`] trait, and
//! [`HttpTransport`], keyward's own (reqwest over rustls), which refuses
//! private, loopback and link-local destinations unless told otherwise,
//! follows no redirects and gives each attempt a deadline.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;

/// Sends one message. Implement it to send through a proxy, a queue or a
/// client of your own; [`HttpTransport`] is keyward's.
#[async_trait]
pub trait WebhookTransport: Send + Sync + 'static {
    /// POSTs `body` (JSON) with `headers` to `url`; the response's status.
    ///
    /// # Errors
    /// [`TransportError`] when no response came: the attempt failed and
    /// is retried.
    async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> Result<u16, TransportError>;
}

/// An attempt that got no response. The message says why without the
/// URL's query or any secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// The longest an attempt waits for its response by default.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// keyward's transport: HTTPS through reqwest and rustls (with the
/// platform's trust roots). Refuses plain `http://` URLs and any
/// destination that is not a public address (loopback, private,
/// link-local, unique-local, CGNAT, multicast, documentation ranges),
/// checked on the addresses the name resolves to, so that a tenant's
/// endpoint cannot reach the host's own network; follows no redirect;
/// gives each attempt [`DEFAULT_ATTEMPT_TIMEOUT`].
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    allow_private: bool,
    allow_http: bool,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("allow_private", &self.allow_private)
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

/// Builds an [`HttpTransport`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HttpTransportBuilder {
    timeout: Duration,
    allow_private: bool,
    allow_http: bool,
}

impl HttpTransport {
    /// The transport with its safe defaults.
    ///
    /// # Errors
    /// [`TransportError`] if the TLS client cannot be made (no trust
    /// roots on the platform).
    pub fn new() -> Result<Self, TransportError> {
        Self::builder().build()
    }

    /// A builder, to change the defaults.
    pub fn builder() -> HttpTransportBuilder {
        HttpTransportBuilder {
            timeout: DEFAULT_ATTEMPT_TIMEOUT,
            allow_private: false,
            allow_http: false,
        }
    }
}

impl HttpTransportBuilder {
    /// How long an attempt waits for its response (1 s to 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.clamp(Duration::from_secs(1), Duration::from_secs(60));
        self
    }

    /// Lets endpoints reach private and loopback addresses: for a
    /// receiver on the same machine or network, in development or when
    /// every tenant is trusted.
    pub fn allow_private_networks(mut self, allow: bool) -> Self {
        self.allow_private = allow;
        self
    }

    /// Lets endpoints use plain `http://`: messages are signed, not
    /// encrypted, so only for development.
    pub fn allow_plain_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// The transport.
    ///
    /// # Errors
    /// [`TransportError`] if the TLS client cannot be made.
    pub fn build(self) -> Result<HttpTransport, TransportError> {
        let mut client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment (HTTPS_PROXY) would resolve the
            // endpoint's name itself, past the address check: none.
            .no_proxy()
            .user_agent(concat!("keyward-webhooks/", env!("CARGO_PKG_VERSION")))
            .https_only(!self.allow_http);
        if !self.allow_private {
            client = client.dns_resolver(Arc::new(PublicOnly));
        }
        let client = client
            .build()
            .map_err(|e| TransportError(format!("cannot build the HTTPS client: {e}")))?;
        Ok(HttpTransport {
            client,
            allow_private: self.allow_private,
            allow_http: self.allow_http,
        })
    }
}

#[async_trait]
impl WebhookTransport for HttpTransport {
    async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> Result<u16, TransportError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| TransportError("the endpoint URL is not a valid URL".into()))?;
        if !self.allow_http && parsed.scheme() != "https" {
            return Err(TransportError(
                "plain http:// endpoints are refused (HttpTransportBuilder::allow_plain_http)"
                    .into(),
            ));
        }
        // A literal address is not resolved, so it is checked here.
        if !self.allow_private {
            let literal = parsed
                .host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                .and_then(|h| h.parse::<IpAddr>().ok());
            if literal.is_some_and(|ip| !is_public(ip)) {
                return Err(refused_destination());
            }
        }
        let mut request = self.client.post(parsed).body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        match request.send().await {
            Ok(response) => Ok(response.status().as_u16()),
            Err(e) if e.is_timeout() => {
                Err(TransportError("the endpoint did not answer in time".into()))
            }
            Err(e) if e.is_connect() => Err(TransportError(format!(
                "could not connect to the endpoint: {}",
                root_cause(&e)
            ))),
            Err(e) => Err(TransportError(format!(
                "the request failed: {}",
                root_cause(&e)
            ))),
        }
    }
}

/// The innermost error's message: what went wrong, without the URL
/// reqwest puts in its own.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string().chars().take(200).collect()
}

fn refused_destination() -> TransportError {
    TransportError(
        "the endpoint resolves to a private or loopback address, which is refused \
         (HttpTransportBuilder::allow_private_networks)"
            .into(),
    )
}

/// Resolves names as the system does, and keeps only public addresses.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = found.filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(
                    Box::new(refused_destination()) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Ranges no endpoint of a tenant's may reach.
const NOT_PUBLIC: &[&str] = &[
    "0.0.0.0/8",
    "192.88.99.0/24",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/96",
    "100::/64",
    "64:ff9b:1::/48",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "2001:db8::/32",
];

/// Whether `ip` is a public address (an IPv4 address inside IPv6, mapped
/// or NAT64, is judged as IPv4).
pub(crate) fn is_public(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
                let o = v6.octets();
                IpAddr::V4(std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]))
            }
            // 6to4: the IPv4 address is in the second and third groups.
            None if v6.segments()[0] == 0x2002 => {
                let o = v6.octets();
                IpAddr::V4(std::net::Ipv4Addr::new(o[2], o[3], o[4], o[5]))
            }
            None => ip,
        },
        v4 => v4,
    };
    !NOT_PUBLIC.iter().any(|net| {
        net.parse::<IpNet>()
            .is_ok_and(|net: IpNet| net.contains(&ip))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::a9fe:a9fe",
            "192.88.99.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "2002:0101:0101::1",
        ] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
        for net in NOT_PUBLIC {
            assert!(net.parse::<IpNet>().is_ok(), "{net}");
        }
    }

    #[tokio::test]
    async fn private_and_plain_destinations_are_refused_before_any_request() {
        let t = HttpTransport::new().expect("client");
        for url in [
            "https://127.0.0.1:9/x",
            "https://[::1]:9/x",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost:9/x",
        ] {
            let err = t.post(url, &[], b"{}").await.expect_err(url);
            assert!(err.0.contains("private or loopback"), "{url}: {err}");
        }
        let err = t
            .post("http://example.com/", &[], b"{}")
            .await
            .expect_err("http");
        assert!(err.0.contains("plain http"), "{err}");
    }
}
