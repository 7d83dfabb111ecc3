//! What a parcel asks of its sandbox: resource limits (`RESOURCES`), the
//! container network (`NETWORK`), and the image of a container courier or of
//! a native agent's tool sandbox. Pure data; the runtime enforces it.

use serde::{Deserialize, Serialize};

/// `RESOURCES CPUS 1 MEMORY 512M PIDS 256 DISK 1G`: limits for every attempt
/// of a run. Each is optional; a missing one is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU time as a number of cores (`0.5`, `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory (resident plus swap where the machine accounts it), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The most processes and threads the run's group may hold at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// The most bytes the run may write into its workspace (and any one file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
}

impl Resources {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

/// `NETWORK none|bridge|host`: what network a container gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// No network but loopback (the default for containers).
    #[default]
    None,
    /// The container runtime's default bridge.
    Bridge,
    /// The host's network namespace.
    Host,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Bridge => "bridge",
            Network::Host => "host",
        }
    }

    /// Parses `none`, `bridge` or `host` (any case).
    pub fn parse(s: &str) -> Result<Network, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Network::None),
            "bridge" => Ok(Network::Bridge),
            "host" => Ok(Network::Host),
            _ => Err(format!(
                "unknown network `{s}` (hint: NETWORK is none, bridge or host)"
            )),
        }
    }
}

/// Checks one host of `NETWORK allow <host>`: a host name or IPv4
/// address, or `*.` and a domain (its subdomains, not the domain itself).
/// Returns it lowercased. Every port of an allowed host is allowed.
pub fn parse_egress_host(host: &str) -> Result<String, String> {
    let h = host.trim().to_ascii_lowercase();
    if h.contains(':') || h.contains('/') || h.contains('@') {
        return Err(format!(
            "NETWORK allow takes a host name, not `{host}` (hint: `NETWORK allow api.example.com`; every port of it is allowed, there is no scheme or path)"
        ));
    }
    let name = h.strip_prefix("*.").unwrap_or(&h);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "NETWORK allow: `{host}` is not a host name (hint: `NETWORK allow api.example.com`, or `NETWORK allow *.example.com` for its subdomains)"
        ));
    }
    Ok(h)
}

/// Whether `host` (as a client named it: any case, a trailing dot, an IPv6
/// address in brackets) is one `NETWORK allow` lists.
pub fn egress_allows(allow: &[String], host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    allow.iter().any(|a| match a.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => *a == host,
    })
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an agent's variables (name, value when known) reach a container:
/// the names the client hands on from its own environment (`-e NAME`: no
/// value on a command line), and the `--env-file` lines (`NAME=value`) of
/// those the client reads itself ([`configures_container_client`]), whose
/// values its environment cannot carry (one without a value is left out).
/// `Err(name)`: that value has a line break, which an env file cannot hold.
pub fn container_env<'a>(
    vars: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<(Vec<&'a str>, String), &'a str> {
    let (mut by_name, mut lines) = (Vec::new(), String::new());
    for (name, value) in vars {
        match (configures_container_client(name), value) {
            (true, Some(v)) if v.contains(['\n', '\r']) => return Err(name),
            (true, Some(v)) => lines.push_str(&format!("{name}={v}\n")),
            (true, None) => {}
            (false, _) => by_name.push(name),
        }
    }
    Ok((by_name, lines))
}

/// Variables a container runtime's CLI (podman or docker) reads itself:
/// where it connects (`DOCKER_HOST`, `DOCKER_CONTEXT`, `CONTAINER_HOST`, …),
/// its configuration and storage, its home, its proxies. Dispatch's client
/// keeps the values of the process that runs it, so a run, its stop and its
/// clean-up all reach the same runtime; an agent's own value of one of
/// these goes into the container by value, never to the client.
pub fn configures_container_client(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "HOME",
        "PATH",
        "TMPDIR",
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_CONFIG",
        "DOCKER_API_VERSION",
        "DOCKER_CERT_PATH",
        "DOCKER_TLS",
        "DOCKER_TLS_VERIFY",
        "DOCKER_CUSTOM_HEADERS",
        "DOCKER_DEFAULT_PLATFORM",
        "DOCKER_CONTENT_TRUST",
        "DOCKER_CONTENT_TRUST_SERVER",
        "DOCKER_HIDE_LEGACY_COMMANDS",
        "CONTAINER_HOST",
        "CONTAINER_CONNECTION",
        "CONTAINER_SSHKEY",
        "CONTAINERS_CONF",
        "CONTAINERS_CONF_OVERRIDE",
        "CONTAINERS_REGISTRIES_CONF",
        "CONTAINERS_STORAGE_CONF",
        "REGISTRY_AUTH_FILE",
        "STORAGE_DRIVER",
        "STORAGE_OPTS",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_RUNTIME_DIR",
    ];
    NAMES.contains(&name)
        || name.starts_with("DOCKER_CLI_")
        || ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"]
            .iter()
            .any(|p| p.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_variables_go_to_the_env_file_and_the_rest_by_name() {
        let vars = [
            ("API_KEY", Some("k")),
            ("HTTPS_PROXY", Some("http://u:p@h:1")),
            ("DOCKER_HOST", None),
        ];
        let (by_name, lines) = container_env(vars).expect("no line break");
        assert_eq!(by_name, ["API_KEY"]);
        assert_eq!(lines, "HTTPS_PROXY=http://u:p@h:1\n");
        assert_eq!(
            container_env([("DOCKER_HOST", Some("a\rb"))]),
            Err("DOCKER_HOST")
        );
    }

    #[test]
    fn the_container_clients_own_variables_are_known() {
        for own in [
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "CONTAINER_HOST",
            "HOME",
            "https_proxy",
        ] {
            assert!(configures_container_client(own), "{own}");
        }
        for agents in ["DOCKER_PASSWORD", "API_KEY", "DISPATCH_EVENTS", "LANG"] {
            assert!(!configures_container_client(agents), "{agents}");
        }
    }

    #[test]
    fn egress_hosts_match_exactly_or_as_subdomains() {
        let allow = vec![
            parse_egress_host("API.Example.com").expect("a host"),
            parse_egress_host("*.corp.example").expect("a wildcard"),
            parse_egress_host("127.0.0.2").expect("an address"),
        ];
        assert!(egress_allows(&allow, "api.example.com"));
        assert!(egress_allows(&allow, "API.EXAMPLE.COM."));
        assert!(!egress_allows(&allow, "evil-api.example.com"));
        assert!(!egress_allows(&allow, "example.com"));
        assert!(egress_allows(&allow, "a.corp.example"));
        assert!(egress_allows(&allow, "b.a.corp.example"));
        assert!(!egress_allows(&allow, "corp.example"));
        assert!(!egress_allows(&allow, "xcorp.example"));
        assert!(egress_allows(&allow, "127.0.0.2"));
        assert!(!egress_allows(&allow, "127.0.0.1"));
        for bad in [
            "*",
            "https://a.com",
            "a.com:443",
            "a..com",
            "-a.com",
            "[::1]",
            "",
        ] {
            assert!(parse_egress_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn networks_are_three() {
        assert_eq!(Network::parse("NONE"), Ok(Network::None));
        assert_eq!(Network::parse("bridge"), Ok(Network::Bridge));
        assert_eq!(Network::parse("host"), Ok(Network::Host));
        assert!(Network::parse("slirp").is_err());
        assert_eq!(Network::default(), Network::None);
    }
}
