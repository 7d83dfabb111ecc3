//! The environment an agent and its tools start with: empty, plus an
//! allowlist. Nothing else of the helper's or worker's environment gets
//! through, so a variable the parcel did not declare is invisible to it.
//!
//! In order (a later one wins over an earlier one of the same name):
//! 1. `PATH` (or a default when the helper has none), `LANG`, every `LC_*`
//!    and `TZ`, from the environment the run executes in;
//! 2. `HOME` (`runs/<id>/home/`) and `TMPDIR` (`runs/<id>/tmp/`);
//! 3. the names the parcel asks for with `ENV_PASSTHROUGH`, when set;
//! 4. the parcel's `ENV`;
//! 5. its `REQUIRES` URLs, by name;
//! 6. its declared `SECRET`s that have a value;
//! 7. the `DISPATCH_*` protocol variables.
//!
//! A native agent has no process of its own: its LOCAL tools and MCP
//! servers start from this environment without any secret ([`for_tools`]),
//! plus the secrets scoped to each (`SECRET NAME TO tool`). A model's KEY
//! stays with the model client.

use std::borrow::Cow;
use std::collections::HashMap;

use dispatch_core::parcel::Manifest;

use crate::workspace::Workspace;

/// `PATH` when the run's environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The agent's environment for `manifest`, from `parent` (the variables of
/// the environment the run executes in), `secrets` (declared names and
/// their values) and the `protocol` variables.
pub fn build(
    manifest: &Manifest,
    ws: &Workspace,
    parent: &[(String, String)],
    secrets: &[(String, String)],
    protocol: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let from_parent = |name: &str| {
        parent
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut env: Vec<(String, String)> = Vec::new();
    let path = from_parent("PATH").unwrap_or_else(|| DEFAULT_PATH.to_string());
    env.push(("PATH".into(), path));
    env.extend(
        parent
            .iter()
            .filter(|(k, _)| k == "LANG" || k == "TZ" || k.starts_with("LC_"))
            .cloned(),
    );
    let text = |p: &std::path::Path| p.to_string_lossy().into_owned();
    env.push(("HOME".into(), text(&ws.home)));
    env.push(("TMPDIR".into(), text(&ws.tmp)));
    for name in &manifest.env_passthrough {
        if let Some(v) = from_parent(name) {
            env.push((name.clone(), v));
        }
    }
    env.extend(manifest.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(
        manifest
            .requires
            .iter()
            .map(|r| (r.name.clone(), r.url.clone())),
    );
    env.extend(secrets.iter().cloned());
    env.extend(protocol);
    dedupe(env)
}

/// What a native agent's tool processes get (see [`for_tools`]).
#[derive(Debug, Default)]
pub struct ToolEnv<'e> {
    /// The agent's environment without any declared secret.
    pub base: Cow<'e, [(String, String)]>,
    /// By TOOL name, the secrets scoped to it (`SECRET NAME TO tool`).
    pub scoped: HashMap<String, Vec<(String, String)>>,
}

/// What a native agent's tool processes get: `env` (the agent's, from
/// [`build`]) without any declared secret, and by TOOL name the secrets
/// scoped to it (`SECRET NAME TO tool`) that have a value in `secrets`.
pub fn for_tools<'e>(
    manifest: &Manifest,
    env: &'e [(String, String)],
    secrets: &[(String, String)],
) -> ToolEnv<'e> {
    // Held for the run's life: `env` itself when no secret is in it (the
    // attempt keeps it anyway), else a copy without spare capacity.
    let secret = |k: &String| manifest.secrets.contains(k);
    let base: Cow<'e, [(String, String)]> = if env.iter().any(|(k, _)| secret(k)) {
        let mut base: Vec<(String, String)> =
            env.iter().filter(|(k, _)| !secret(k)).cloned().collect();
        base.shrink_to_fit();
        Cow::Owned(base)
    } else {
        Cow::Borrowed(env)
    };
    let mut scoped: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (name, tools) in &manifest.secret_tools {
        let Some((_, value)) = secrets.iter().find(|(k, _)| k == name) else {
            continue;
        };
        for tool in tools {
            scoped
                .entry(tool.clone())
                .or_default()
                .push((name.clone(), value.clone()));
        }
    }
    ToolEnv { base, scoped }
}

/// Keeps the last value of each name, in the order names first appear.
fn dedupe(env: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(env.len());
    for (k, v) in env {
        match out.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_the_allowlist_declared_and_protocol_variables_get_through() {
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "schema": 1, "courier": "process", "name": "a", "entrypoint": "job",
            "command": ["true"], "files": [], "env": {"MODE": "fast", "PATH": "/opt/bin"},
            "secrets": ["TOKEN"], "env_passthrough": ["HTTPS_PROXY", "ABSENT"],
            "requires": [{"name": "DB_URL", "url": "postgres://x"}]
        }))
        .expect("manifest");
        let ws = Workspace {
            work: "/r/work".into(),
            home: "/r/home".into(),
            tmp: "/r/tmp".into(),
        };
        let parent = pairs(&[
            ("PATH", "/usr/bin"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C"),
            ("SECRET_OF_THE_PARENT", "no"),
            ("HOME", "/root"),
            ("HTTPS_PROXY", "http://proxy"),
            ("TOKEN", "from-parent-env"),
        ]);
        let env = build(
            &manifest,
            &ws,
            &parent,
            &pairs(&[("TOKEN", "s3cret")]),
            pairs(&[("DISPATCH_RUN_ID", "r1")]),
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("PATH"),
            Some("/opt/bin"),
            "ENV wins over the inherited PATH"
        );
        assert_eq!(get("LANG"), Some("C.UTF-8"));
        assert_eq!(get("LC_ALL"), Some("C"));
        assert_eq!(get("HOME"), Some("/r/home"));
        assert_eq!(get("TMPDIR"), Some("/r/tmp"));
        assert_eq!(get("HTTPS_PROXY"), Some("http://proxy"));
        assert_eq!(get("ABSENT"), None);
        assert_eq!(get("MODE"), Some("fast"));
        assert_eq!(get("DB_URL"), Some("postgres://x"));
        assert_eq!(get("TOKEN"), Some("s3cret"));
        assert_eq!(get("DISPATCH_RUN_ID"), Some("r1"));
        assert_eq!(get("SECRET_OF_THE_PARENT"), None);
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
    }

    #[test]
    fn tools_get_only_the_secrets_scoped_to_them() {
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "schema": 1, "courier": "agent", "name": "a", "entrypoint": "job",
            "command": [], "files": [], "secrets": ["OPENAI_API_KEY", "GH", "ALL"],
            "secret_tools": {"GH": ["github"], "ALL": ["github", "probe"]}
        }))
        .expect("manifest");
        let secrets = pairs(&[("OPENAI_API_KEY", "sk-1"), ("GH", "gh-1"), ("ALL", "all-1")]);
        let mut env = pairs(&[("PATH", "/usr/bin")]);
        env.extend(secrets.iter().cloned());
        let ToolEnv { base, scoped } = for_tools(&manifest, &env, &secrets);
        assert_eq!(*base, pairs(&[("PATH", "/usr/bin")]));
        assert_eq!(scoped["github"], pairs(&[("ALL", "all-1"), ("GH", "gh-1")]));
        assert_eq!(scoped["probe"], pairs(&[("ALL", "all-1")]));
        assert!(
            !scoped
                .values()
                .flatten()
                .any(|(k, _)| k == "OPENAI_API_KEY")
        );
    }
}
