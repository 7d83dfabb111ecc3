//! The operator's A2A policy, as upstream Dispatch documents it: where the
//! run executes, `DISPATCH_A2A_ALLOWED_ORIGINS` (comma-separated exact
//! origins `https://planner.example.com` or bare hostnames) and
//! `DISPATCH_A2A_TRUST_POLICY` (a TOML file of `[[rules]]`, each with
//! `origin_prefix` and/or `hostname`, optionally requiring the discovered
//! card's `expected_agent_name` / `expected_card_sha256`).
//!
//! With an allowlist, a URL outside it is refused. With a policy file, a URL
//! no rule matches is refused; the rules that match compose, and two that
//! require different identities refuse the call (fail closed).

use serde::Deserialize;
use url::Url;

pub const ALLOWED_ORIGINS_ENV: &str = "DISPATCH_A2A_ALLOWED_ORIGINS";
pub const TRUST_POLICY_ENV: &str = "DISPATCH_A2A_TRUST_POLICY";

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub origin_prefix: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub expected_agent_name: Option<String>,
    #[serde(default)]
    pub expected_card_sha256: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rules: Vec<Rule>,
}

/// The identity a matched policy requires of the discovered card.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Required {
    pub agent_name: Option<String>,
    pub card_sha256: Option<String>,
}

impl Required {
    pub fn any(&self) -> bool {
        self.agent_name.is_some() || self.card_sha256.is_some()
    }
}

/// The operator's policy (empty: every URL the parcel declares is allowed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    pub allowed: Vec<String>,
    pub rules: Option<Vec<Rule>>,
}

impl Policy {
    /// Reads the two variables through `var`; a policy file that cannot be
    /// read or parsed is an error that names it.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Policy, String> {
        let allowed = var(ALLOWED_ORIGINS_ENV)
            .map(|v| {
                v.split(',')
                    .map(|e| e.trim().trim_end_matches('/').to_ascii_lowercase())
                    .filter(|e| !e.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let rules = match var(TRUST_POLICY_ENV).filter(|p| !p.trim().is_empty()) {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!("{TRUST_POLICY_ENV}={path}: cannot read the A2A trust policy: {e}")
                })?;
                let file: PolicyFile = toml::from_str(&text).map_err(|e| {
                    format!(
                        "{TRUST_POLICY_ENV}={path}: not an A2A trust policy: {}",
                        e.message()
                    )
                })?;
                if let Some(i) = file
                    .rules
                    .iter()
                    .position(|r| r.origin_prefix.is_none() && r.hostname.is_none())
                {
                    return Err(format!(
                        "{TRUST_POLICY_ENV}={path}: rule {} sets neither origin_prefix nor hostname",
                        i + 1
                    ));
                }
                Some(file.rules)
            }
        };
        Ok(Policy { allowed, rules })
    }

    /// Whether the operator lets a call go to `url`, and what identity it
    /// then requires of the card. The error is one line saying why not.
    pub fn check(&self, url: &str) -> Result<Required, String> {
        let parsed = Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
        let origin = parsed.origin().ascii_serialization().to_ascii_lowercase();
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        if !self.allowed.is_empty()
            && !self.allowed.iter().any(|a| {
                if a.contains("://") {
                    *a == origin
                } else {
                    *a == host
                }
            })
        {
            return Err(format!(
                "{origin} is not in {ALLOWED_ORIGINS_ENV} (hint: add it there, as an origin or a hostname)"
            ));
        }
        let Some(rules) = &self.rules else {
            return Ok(Required::default());
        };
        let matched: Vec<&Rule> = rules
            .iter()
            .filter(|r| {
                r.origin_prefix.as_ref().is_none_or(|p| {
                    url.to_ascii_lowercase()
                        .starts_with(&p.to_ascii_lowercase())
                }) && r
                    .hostname
                    .as_ref()
                    .is_none_or(|h| h.eq_ignore_ascii_case(&host))
            })
            .collect();
        if matched.is_empty() {
            return Err(format!(
                "no rule of the A2A trust policy ({TRUST_POLICY_ENV}) matches {url} (hint: add a [[rules]] entry with its origin_prefix or hostname)"
            ));
        }
        let mut req = Required::default();
        for r in matched {
            merge(&mut req.agent_name, &r.expected_agent_name, "agent name")?;
            let digest = r
                .expected_card_sha256
                .as_ref()
                .map(|d| d.to_ascii_lowercase());
            merge(&mut req.card_sha256, &digest, "card digest")?;
        }
        Ok(req)
    }
}

fn merge(into: &mut Option<String>, new: &Option<String>, what: &str) -> Result<(), String> {
    match (into.as_ref(), new) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "the A2A trust policy's rules that match require different {what}s (`{a}` and `{b}`)"
        )),
        (None, Some(b)) => {
            *into = Some(b.clone());
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &str, toml_text: Option<&str>) -> Result<Policy, String> {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("policy.toml");
        if let Some(t) = toml_text {
            std::fs::write(&path, t).expect("write");
        }
        let p = path.to_string_lossy().into_owned();
        Policy::from_env(|k| match k {
            ALLOWED_ORIGINS_ENV => Some(allowed.to_string()),
            TRUST_POLICY_ENV => toml_text.map(|_| p.clone()),
            _ => None,
        })
    }

    #[test]
    fn the_allowlist_takes_origins_and_hostnames() {
        let p = policy("https://planner.example.com, search.internal", None).expect("ok");
        assert!(p.check("https://planner.example.com/a2a").is_ok());
        assert!(p.check("https://search.internal:8443/").is_ok());
        let e = p
            .check("http://planner.example.com/")
            .expect_err("other origin");
        assert!(e.contains("DISPATCH_A2A_ALLOWED_ORIGINS"), "{e}");
        assert!(policy("", None).expect("ok").check("https://any").is_ok());
    }

    #[test]
    fn trust_rules_compose_and_fail_closed() {
        let p = policy(
            "",
            Some(
                r#"
[[rules]]
origin_prefix = "https://planner.example.com"
expected_agent_name = "planner"

[[rules]]
hostname = "planner.example.com"
expected_card_sha256 = "AB"
"#,
            ),
        )
        .expect("ok");
        let req = p.check("https://planner.example.com/x").expect("matched");
        assert_eq!(req.agent_name.as_deref(), Some("planner"));
        assert_eq!(req.card_sha256.as_deref(), Some("ab"));
        let e = p.check("https://other.example.com").expect_err("no rule");
        assert!(e.contains("no rule"), "{e}");

        let p = policy(
            "",
            Some("[[rules]]\nhostname = \"a\"\nexpected_agent_name = \"x\"\n[[rules]]\nhostname = \"a\"\nexpected_agent_name = \"y\"\n"),
        )
        .expect("ok");
        assert!(
            p.check("https://a/")
                .expect_err("conflict")
                .contains("different")
        );
        let e = policy("", Some("[[rules]]\nexpected_agent_name = \"x\"\n")).expect_err("bad rule");
        assert!(e.contains("neither"), "{e}");
        let e = policy("", Some("rules = 3")).expect_err("not a policy");
        assert!(e.contains("not an A2A trust policy"), "{e}");
    }
}
