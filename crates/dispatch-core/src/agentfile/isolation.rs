//! The sandbox directives: `RESOURCES CPUS <n> MEMORY <size> PIDS <n> DISK
//! <size>`, `NETWORK none|bridge|host`, `NETWORK allow <host>`, `FROM
//! image <ref>` and
//! `TOOL_SANDBOX image <ref>`.

use super::lex::expected;
use crate::isolation::{Network, Resources};
use crate::parcel::{Courier, Manifest};
use crate::units::parse_size;

/// The most cores a `CPUS` value may ask for (a typo guard, not the machine's
/// size: that is checked where the run executes).
const MAX_CPUS: f64 = 4096.0;

/// Parses `RESOURCES` arguments into `into` (several lines add up; a key set
/// twice is an error).
pub(super) fn parse_resources(
    into: &mut Resources,
    rest: &str,
    args: &[String],
) -> Result<(), String> {
    const HINT: &str = "hint: `RESOURCES CPUS 1 MEMORY 512M PIDS 256 DISK 1G`";
    if !args.len().is_multiple_of(2) {
        return Err(format!(
            "RESOURCES expects KEY value pairs, got `{rest}` ({HINT})"
        ));
    }
    for pair in args.chunks(2) {
        let (key, value) = (pair[0].to_ascii_uppercase(), pair[1].as_str());
        let twice = || format!("RESOURCES {key} is set twice (hint: keep one)");
        match key.as_str() {
            "CPUS" | "CPU" => {
                let n: f64 = value
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite() && *n > 0.0 && *n <= MAX_CPUS)
                    .ok_or_else(|| {
                        format!(
                            "RESOURCES CPUS expects a number of cores above 0, got `{value}` (hint: `CPUS 0.5` or `CPUS 2`)"
                        )
                    })?;
                if into.cpus.replace(n).is_some() {
                    return Err(twice());
                }
            }
            "MEMORY" | "DISK" => {
                let n = parse_size(value).map_err(|_| {
                    format!(
                        "RESOURCES {key} expects a size such as 512M or 1G, got `{value}` (hint: units are K, M, G, T)"
                    )
                })?;
                let slot = match key.as_str() {
                    "MEMORY" => &mut into.memory_bytes,
                    _ => &mut into.disk_bytes,
                };
                if slot.replace(n).is_some() {
                    return Err(twice());
                }
            }
            "PIDS" => {
                let n: u64 = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!(
                        "RESOURCES PIDS expects a whole number above 0, got `{value}` (hint: `PIDS 256`)"
                    )
                })?;
                if into.pids.replace(n).is_some() {
                    return Err(twice());
                }
            }
            _ => {
                return Err(format!(
                    "RESOURCES: unknown limit `{}` (hint: CPUS, MEMORY, PIDS or DISK; {HINT})",
                    pair[0]
                ));
            }
        }
    }
    Ok(())
}

/// One `NETWORK` line: a container's network, or a host to allow.
pub(super) enum NetworkLine {
    Container(Network),
    Allow(String),
}

/// Parses `NETWORK none|bridge|host` and `NETWORK allow <host>` (one host
/// a line, as upstream writes them; several lines add up).
pub(super) fn parse_network(rest: &str, args: &[String]) -> Result<NetworkLine, String> {
    match args {
        [allow, host] if allow.eq_ignore_ascii_case("allow") => {
            crate::isolation::parse_egress_host(host).map(NetworkLine::Allow)
        }
        [allow] if allow.eq_ignore_ascii_case("allow") => {
            Err("NETWORK allow needs a host (hint: `NETWORK allow api.example.com`)".into())
        }
        [allow, host, more @ ..] if allow.eq_ignore_ascii_case("allow") => Err(format!(
            "NETWORK allow {host}: `{}` is not supported (hint: one host a line, nothing after it)",
            more.join(" ")
        )),
        [one] => Network::parse(one).map(NetworkLine::Container),
        _ => Err(expected("NETWORK", rest)),
    }
}

/// Why a parcel's `NETWORK allow` lines cannot be enforced for what it
/// runs (they filter the processes the run's sandbox starts), if they cannot.
pub(super) fn egress_refused(m: &Manifest) -> Option<String> {
    if m.egress.is_empty() {
        return None;
    }
    let why = if m.courier == Courier::Image {
        "NETWORK allow filters the processes of the run's sandbox, not a container (hint: `NETWORK none|bridge|host` for `FROM image`, or run the agent as `FROM process`)"
    } else if m.tool_sandbox.is_some() {
        "NETWORK allow does not reach tools in a TOOL_SANDBOX container (hint: drop TOOL_SANDBOX so the tools run in the run's sandbox, or use `NETWORK none|bridge|host`)"
    } else if m.component.is_some() {
        "NETWORK allow filters processes; a WASM agent's guest is not one (hint: declare the hosts it calls as `TOOL HTTP` tools)"
    } else if matches!(m.courier, Courier::Noop | Courier::Workflow) {
        "NETWORK allow filters the processes a run starts, and this courier starts none (hint: put it in the Agentfile of the agent that calls out)"
    } else {
        return None;
    };
    Some(why.into())
}

/// Parses an image reference: `image <ref>` after FROM or TOOL_SANDBOX.
/// Returns the reference.
pub(super) fn parse_image_ref(key: &str, rest: &str, args: &[String]) -> Result<String, String> {
    let [kind, reference] = args else {
        return Err(format!(
            "{key} image expects one image reference, got `{rest}` (hint: `{key} image localhost/agent:1`)"
        ));
    };
    if !kind.eq_ignore_ascii_case("image") {
        return Err(expected(key, rest));
    }
    check_image_ref(reference)?;
    Ok(reference.clone())
}

/// An image reference as podman and docker take it: no whitespace or control
/// characters, no leading `-` (it would read as a flag), at most 512 bytes.
fn check_image_ref(r: &str) -> Result<(), String> {
    let ok = !r.is_empty()
        && r.len() <= 512
        && !r.starts_with('-')
        && r.chars().all(|c| c.is_ascii_graphic())
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/:._-@+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{r}` is not an image reference (hint: `localhost/agent-py:1`, `docker.io/library/python:3.12`, or `name@sha256:…`)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn resources_read_every_limit() {
        let mut r = Resources::default();
        let line = "CPUS 1.5 MEMORY 512M PIDS 256 DISK 1G";
        parse_resources(&mut r, line, &args(line)).expect("parses");
        assert_eq!(r.cpus, Some(1.5));
        assert_eq!(r.memory_bytes, Some(512 << 20));
        assert_eq!(r.pids, Some(256));
        assert_eq!(r.disk_bytes, Some(1 << 30));
    }

    #[test]
    fn bad_resources_say_what_is_wrong() {
        for (line, needle) in [
            ("CPUS", "KEY value pairs"),
            ("CPUS 0", "above 0"),
            ("CPUS lots", "number of cores"),
            ("MEMORY 1.5G", "size such as"),
            ("MEMORY 0", "size such as"),
            ("PIDS -1", "whole number"),
            ("SWAP 1G", "unknown limit `SWAP`"),
            ("PIDS 1 PIDS 2", "set twice"),
        ] {
            let mut r = Resources::default();
            let e = parse_resources(&mut r, line, &args(line)).expect_err(line);
            assert!(e.contains(needle), "{line}: {e}");
        }
    }

    #[test]
    fn image_references_are_checked() {
        let ok = parse_image_ref("FROM", "image localhost/a:1", &args("image localhost/a:1"));
        assert_eq!(ok.as_deref(), Ok("localhost/a:1"));
        for bad in ["image", "image -v", "image a;rm", "box localhost/a"] {
            assert!(parse_image_ref("FROM", bad, &args(bad)).is_err(), "{bad}");
        }
    }
}
