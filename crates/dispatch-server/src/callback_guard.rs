//! Where completion callbacks may go. Anyone with a token can name a
//! `callback_url`, and the server POSTs to it from inside the operator's
//! network: left open, that is a way to reach the cloud metadata service
//! (`169.254.169.254`) or the server's own loopback services.
//!
//! Refused unless the operator allows them (`dispatch server
//! --allow-private-callbacks`): loopback, link-local (`169.254.0.0/16`,
//! `fe80::/10`), unspecified, broadcast and multicast addresses, and the
//! metadata addresses that are outside those ranges (`100.100.100.200`,
//! `fd00:ec2::254`), also when written as IPv4-mapped or NAT64 IPv6.
//! Private ranges (`10/8`, `172.16/12`, `192.168/16`, `fc00::/7`) are
//! allowed: a receiver beside the cluster is the common case.
//!
//! Checked twice: the URL when the run is created (an address written in
//! it, and `localhost`), and every address a host name resolves to when the
//! callback is sent; the connection goes only to an address that passed
//! (the client's resolver is [`Guarded`]), so a name that resolves to a
//! public address at creation and to a refused one later (DNS rebinding)
//! is still refused. Redirects are not followed and proxies not used: both
//! would connect somewhere this check never saw.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Whether callbacks may go to the addresses this module refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallbackPolicy {
    pub allow_private: bool,
}

const HINT: &str =
    "(hint: name a public http(s) receiver, or start the server with --allow-private-callbacks)";

/// The URL, when a callback may be sent there; else the one line saying why not.
pub fn check_url(url: &str, policy: CallbackPolicy) -> Result<Url, String> {
    let parsed = Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| format!("callback_url `{url}` is not an http(s)://host[:port]/path URL"))?;
    if policy.allow_private {
        return Ok(parsed);
    }
    let refusal = match parsed.host() {
        Some(Host::Ipv4(ip)) => refused(IpAddr::V4(ip)).map(|why| (ip.to_string(), why)),
        Some(Host::Ipv6(ip)) => refused(IpAddr::V6(ip)).map(|why| (ip.to_string(), why)),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            (name == "localhost" || name.ends_with(".localhost")).then_some((name, "loopback"))
        }
        None => None,
    };
    match refusal {
        Some((host, why)) => Err(format!(
            "callback_url `{url}` names {host}, a {why} address, where callbacks are refused {HINT}"
        )),
        None => Ok(parsed),
    }
}

/// Why callbacks may not go to `ip` by default (`None`: they may).
pub fn refused(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped().or_else(|| nat64(v6)) {
                return refused_v4(v4);
            }
            refused_v6(v6)
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        Some("loopback")
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some("cloud metadata")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.octets()[0] == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() || ip.is_multicast() {
        Some("broadcast or multicast")
    } else {
        None
    }
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("cloud metadata")
    } else if ip.is_unicast_link_local() {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("broadcast or multicast")
    } else {
        None
    }
}

/// The IPv4 address inside a NAT64 address (`64:ff9b::/96`).
fn nat64(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    })
}

/// A resolver that drops the addresses [`refused`] names, unless allowed:
/// the client connects only to what is left.
#[derive(Debug)]
pub struct Guarded {
    policy: CallbackPolicy,
}

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if policy.allow_private {
                return Ok(Box::new(all.into_iter()) as Addrs);
            }
            let first_refused = all
                .iter()
                .find_map(|a| refused(a.ip()).map(|why| (a.ip(), why)));
            let allowed: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| refused(a.ip()).is_none())
                .collect();
            match (allowed.is_empty(), first_refused) {
                (true, Some((ip, why))) => Err(format!(
                    "callback host {host} resolves to {ip}, a {why} address, where callbacks are refused {HINT}"
                )
                .into()),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// The client callbacks are sent with: the workspace's (`dispatch_http`:
/// rustls, the built-in roots and `DISPATCH_CACERT`), the [`Guarded`]
/// resolver, no redirects, no proxy. When `DISPATCH_CACERT` cannot be used
/// the error says why (the server refuses to start).
pub fn client(policy: CallbackPolicy) -> Result<reqwest::Client, dispatch_http::HttpError> {
    dispatch_http::builder("callback")?
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(Guarded { policy }))
        .build()
        .map_err(dispatch_http::HttpError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENY: CallbackPolicy = CallbackPolicy {
        allow_private: false,
    };

    #[test]
    fn metadata_loopback_and_link_local_addresses_are_refused() {
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.1.2/",
            "http://127.0.0.1:8077/v1/runs",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0.0.0.0:80/",
            "http://[::1]/",
            "http://[::]/",
            "http://[fe80::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
            "https://localhost/",
            "http://api.localhost./",
            "http://255.255.255.255/",
        ] {
            let refusal = check_url(url, DENY).expect_err(url);
            assert!(refusal.contains("--allow-private-callbacks"), "{refusal}");
        }
    }

    #[test]
    fn public_and_private_network_receivers_are_accepted() {
        for url in [
            "https://hooks.example.com/done",
            "http://10.0.0.5:9000/cb",
            "http://192.168.1.10/cb",
            "http://[2001:db8::1]/cb",
        ] {
            check_url(url, DENY).expect(url);
        }
    }

    #[test]
    fn the_operator_may_allow_private_receivers() {
        let allow = CallbackPolicy {
            allow_private: true,
        };
        check_url("http://127.0.0.1:9/cb", allow).expect("allowed");
    }

    /// DNS rebinding: the name is checked where it resolves, when sent.
    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_when_sent() {
        let guarded = Guarded { policy: DENY };
        let name: Name = "localhost".parse().expect("a name");
        let refusal = match guarded.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(refusal.contains("loopback"), "{refusal}");
        let allowing = Guarded {
            policy: CallbackPolicy {
                allow_private: true,
            },
        };
        let name: Name = "localhost".parse().expect("a name");
        assert!(allowing.resolve(name).await.is_ok());
    }

    #[test]
    fn only_http_and_https_urls_are_callbacks() {
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "example.com/cb",
            "data:text/plain,x",
        ] {
            assert!(check_url(url, DENY).is_err(), "{url}");
        }
    }
}
