//! `notifications.toml`: the channels (webhooks, Slack incoming webhooks,
//! e-mail over SMTP), which events go to which of them, escalation steps and
//! delivery settings. Checked whole when loaded: a file that does not parse,
//! names an unknown channel or a variable that is not set is refused with one
//! line saying where and what.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// The variable naming the configuration file.
pub const ENV: &str = "DISPATCH_NOTIFICATIONS";
/// The file looked for in the state directory.
pub const FILE: &str = "notifications.toml";

/// The file in force under state directory `root`: `$DISPATCH_NOTIFICATIONS`
/// (which must exist), else `notifications.toml` there when it exists.
pub fn file_in(root: &Path) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = root.join(FILE);
    path.exists().then_some(path)
}

/// Loads the configuration in force under `root`, if any.
pub fn load_in(root: &Path) -> Result<Option<Config>, ConfigError> {
    file_in(root).map(|p| Config::load(&p)).transpose()
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub channels: BTreeMap<String, Channel>,
    pub approvals: Route,
    pub escalate: Vec<Escalation>,
    pub failures: Route,
    pub budget: Route,
    /// The budget marks (percent of a run's hard limit) that notify.
    pub budget_percent: Vec<u32>,
    pub delivery: Delivery,
}

/// Who hears of one kind of event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub notify: Vec<String>,
}

/// An escalation step: an approval still pending `after` its request goes
/// to `notify` too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escalation {
    pub after: Duration,
    pub notify: Vec<String>,
}

/// Retries and pacing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Tries of a notification before it is given up on.
    pub tries: u32,
    /// The wait before the first retry; doubled each time up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How long one request may take.
    pub timeout: Duration,
    /// Local runs: how long a run's helper keeps delivering after its run ended.
    pub linger: Duration,
    /// How often the outbox is looked at.
    pub poll: Duration,
    /// A notification older than this when first tried is not sent (a
    /// backlog from before notifications were configured, or from a long
    /// outage of every deliverer): settled `skipped`.
    pub max_age: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            tries: 8,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            linger: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            max_age: Duration::from_secs(86_400),
        }
    }
}

/// Where a message goes, with the secrets it needs resolved.
#[derive(Clone, Debug)]
pub enum Channel {
    /// A JSON POST, signed with HMAC-SHA256 (`Dispatch-Signature`).
    Webhook { url: reqwest::Url, secret: String },
    /// A Slack incoming webhook (`{"text", "blocks"}`).
    Slack { url: reqwest::Url },
    /// E-mail over SMTP.
    Email(Box<Smtp>),
}

impl Channel {
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Webhook { .. } => "webhook",
            Channel::Slack { .. } => "slack",
            Channel::Email(_) => "email",
        }
    }
}

/// An SMTP server and the message's envelope.
#[derive(Clone, Debug)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub from: lettre::message::Mailbox,
    pub to: Vec<lettre::message::Mailbox>,
    pub credentials: Option<(String, String)>,
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// STARTTLS, required (the default; port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain text: a relay on the same host or network only.
    None,
}

// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    channels: BTreeMap<String, RawChannel>,
    #[serde(default)]
    approvals: RawApprovals,
    #[serde(default)]
    failures: RawRoute,
    #[serde(default)]
    budget: RawBudget,
    #[serde(default)]
    delivery: RawDelivery,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase", tag = "type")]
enum RawChannel {
    Webhook {
        url: Option<String>,
        url_env: Option<String>,
        secret: Option<String>,
        secret_env: Option<String>,
    },
    Slack {
        url: Option<String>,
        url_env: Option<String>,
    },
    Email {
        smtp: String,
        tls: Option<SmtpTls>,
        from: String,
        to: Vec<String>,
        username: Option<String>,
        password_env: Option<String>,
    },
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    notify: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApprovals {
    #[serde(default)]
    notify: Vec<String>,
    #[serde(default)]
    escalate: Vec<RawEscalation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    after: String,
    notify: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    #[serde(default)]
    notify: Vec<String>,
    percent: Option<Vec<u32>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    tries: Option<u32>,
    backoff: Option<String>,
    max_backoff: Option<String>,
    timeout: Option<String>,
    linger: Option<String>,
    poll: Option<String>,
    max_age: Option<String>,
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            message: format!("cannot read it: {e}"),
        })?;
        Config::parse(path, &text, &|name| std::env::var(name).ok())
    }

    /// Checks `text` (the file at `path`), reading variables with `env`.
    pub fn parse(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let fail = |message: String| ConfigError {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| fail(one_line(text, &e)))?;
        let mut channels = BTreeMap::new();
        for (name, raw) in raw.channels {
            let channel =
                channel(&name, raw, env).map_err(|m| fail(format!("channel `{name}`: {m}")))?;
            channels.insert(name, channel);
        }
        let known = |section: &str, names: &[String]| -> Result<Vec<String>, ConfigError> {
            for n in names {
                if !channels.contains_key(n) {
                    let have: Vec<&str> = channels.keys().map(String::as_str).collect();
                    return Err(fail(format!(
                        "{section}.notify names channel `{n}`, which is not defined (defined: {}; add a [channels.{n}] table)",
                        if have.is_empty() {
                            "none".to_string()
                        } else {
                            have.join(", ")
                        }
                    )));
                }
            }
            Ok(names.to_vec())
        };
        let approvals = Route {
            notify: known("approvals", &raw.approvals.notify)?,
        };
        let mut escalate = Vec::new();
        for (n, step) in raw.approvals.escalate.iter().enumerate() {
            let after = duration(&step.after)
                .map_err(|m| fail(format!("approvals.escalate[{n}].after: {m}")))?;
            if escalate
                .last()
                .is_some_and(|e: &Escalation| e.after >= after)
            {
                return Err(fail(format!(
                    "approvals.escalate[{n}].after ({}) must be later than the step before it",
                    step.after
                )));
            }
            escalate.push(Escalation {
                after,
                notify: known(&format!("approvals.escalate[{n}]"), &step.notify)?,
            });
        }
        let failures = Route {
            notify: known("failures", &raw.failures.notify)?,
        };
        let budget = Route {
            notify: known("budget", &raw.budget.notify)?,
        };
        let marks = dispatch_store::notifications::BUDGET_MARKS;
        let budget_percent = raw.budget.percent.unwrap_or_else(|| vec![80]);
        if let Some(bad) = budget_percent.iter().find(|p| !marks.contains(p)) {
            return Err(fail(format!(
                "budget.percent: {bad} is not a mark (expected some of {marks:?})"
            )));
        }
        let d = raw.delivery;
        let def = Delivery::default();
        let dur = |name: &str, v: &Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(v) => duration(v).map_err(|m| fail(format!("delivery.{name}: {m}"))),
        };
        let delivery = Delivery {
            tries: d.tries.unwrap_or(def.tries).max(1),
            backoff: dur("backoff", &d.backoff, def.backoff)?,
            max_backoff: dur("max_backoff", &d.max_backoff, def.max_backoff)?,
            timeout: dur("timeout", &d.timeout, def.timeout)?,
            linger: dur("linger", &d.linger, def.linger)?,
            poll: dur("poll", &d.poll, def.poll)?,
            max_age: dur("max_age", &d.max_age, def.max_age)?,
        };
        Ok(Config {
            path: path.to_path_buf(),
            channels,
            approvals,
            escalate,
            failures,
            budget,
            budget_percent,
            delivery,
        })
    }

    /// The channels that hear of notification `n` (by its kind and data).
    pub fn route(&self, n: &dispatch_store::Notification) -> &[String] {
        use dispatch_store::notifications as k;
        match n.kind.as_str() {
            k::APPROVAL_REQUESTED => &self.approvals.notify,
            k::APPROVAL_ESCALATED => {
                let step = n.data["escalation"]["step"].as_u64().unwrap_or(0);
                usize::try_from(step)
                    .ok()
                    .and_then(|s| s.checked_sub(1))
                    .and_then(|i| self.escalate.get(i))
                    .map_or(&[], |e| e.notify.as_slice())
            }
            k::RUN_FAILED => &self.failures.notify,
            // The review nobody decided: to whoever hears of approvals.
            k::REVIEW_EXPIRED => &self.approvals.notify,
            // A project's quota: its soft mark and its hard limit, each
            // once per period, to whoever hears of budgets.
            k::QUOTA_SOFT | k::QUOTA_HARD => &self.budget.notify,
            k::BUDGET_THRESHOLD => {
                let pct = n.data["percent"].as_u64().unwrap_or(0);
                match self.budget_percent.iter().any(|p| u64::from(*p) == pct) {
                    true => &self.budget.notify,
                    false => &[],
                }
            }
            _ => &[],
        }
    }
}

fn channel(
    name: &str,
    raw: RawChannel,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Channel, String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    {
        return Err("a channel's name is letters, digits, `-` and `_`".into());
    }
    let from_env = |var: &str| {
        env(var)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("`{var}` is not set (or empty) in this process's environment"))
    };
    let either = |what: &str, direct: Option<String>, var: Option<String>| match (direct, var) {
        (Some(v), None) => Ok(v),
        (None, Some(var)) => from_env(&var),
        (Some(_), Some(_)) => Err(format!("give `{what}` or `{what}_env`, not both")),
        (None, None) => Err(format!(
            "`{what}` (or `{what}_env`, a variable holding it) is required"
        )),
    };
    let http_url = |text: String| -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(&text).map_err(|e| format!("url: {e}"))?;
        match url.scheme() {
            "http" | "https" => Ok(url),
            s => Err(format!("url: `{s}:` is not http or https")),
        }
    };
    Ok(match raw {
        RawChannel::Webhook {
            url,
            url_env,
            secret,
            secret_env,
        } => Channel::Webhook {
            url: http_url(either("url", url, url_env)?)?,
            secret: either("secret", secret, secret_env)?,
        },
        RawChannel::Slack { url, url_env } => Channel::Slack {
            url: http_url(either("url", url, url_env)?)?,
        },
        RawChannel::Email {
            smtp,
            tls,
            from,
            to,
            username,
            password_env,
        } => {
            let (host, port) = smtp
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                .filter(|(h, _)| !h.is_empty())
                .ok_or_else(|| {
                    format!("smtp: `{smtp}` is not HOST:PORT (e.g. mail.example.com:587)")
                })?;
            let mailbox = |field: &str, text: &str| {
                text.parse::<lettre::message::Mailbox>()
                    .map_err(|e| format!("{field}: `{text}` is not an address ({e})"))
            };
            if to.is_empty() {
                return Err("to: at least one address".into());
            }
            let credentials = match (username, password_env) {
                (None, None) => None,
                (Some(u), Some(var)) => Some((u, from_env(&var)?)),
                _ => return Err("give both `username` and `password_env`, or neither".into()),
            };
            Channel::Email(Box::new(Smtp {
                host,
                port,
                tls: tls.unwrap_or(SmtpTls::Starttls),
                from: mailbox("from", &from)?,
                to: to
                    .iter()
                    .map(|t| mailbox("to", t))
                    .collect::<Result<_, _>>()?,
                credentials,
            }))
        }
    })
}

/// `500ms`, `10s`, `30m`, `2h` or `1d` ([`dispatch_core::units`]' grammar;
/// a bare number is refused).
pub fn duration(text: &str) -> Result<Duration, String> {
    dispatch_core::units::parse_duration(text).map_err(|e| e.to_string())
}

/// A TOML error on one line: `line L, column C: message`.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {col}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let env = |name: &str| (name == "HOOK_SECRET").then(|| "s3cret".to_string());
        Config::parse(Path::new("n.toml"), text, &env).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
[channels.ops]
type = "webhook"
url = "http://127.0.0.1:9/hook"
secret_env = "HOOK_SECRET"

[channels.team]
type = "slack"
url = "https://hooks.slack.com/services/T/B/X"

[channels.leads]
type = "email"
smtp = "127.0.0.1:2525"
tls = "none"
from = "Dispatch <dispatch@example.com>"
to = ["leads@example.com"]

[approvals]
notify = ["team"]
escalate = [{ after = "30m", notify = ["leads"] }]

[failures]
notify = ["ops"]

[budget]
notify = ["ops"]
percent = [80, 100]

[delivery]
tries = 3
backoff = "100ms"
max_age = "2h"
"#;

    #[test]
    fn a_good_file_loads_with_its_routes_and_secrets() {
        let c = parse(GOOD).expect("loads");
        assert_eq!(c.channels.len(), 3);
        assert!(
            matches!(&c.channels["ops"], Channel::Webhook { secret, .. } if secret == "s3cret")
        );
        assert_eq!(c.escalate[0].after, Duration::from_secs(1800));
        assert_eq!(c.delivery.tries, 3);
        assert_eq!(c.delivery.backoff, Duration::from_millis(100));
        assert_eq!(c.delivery.max_age, Duration::from_secs(7200));
        assert_eq!(c.budget_percent, vec![80, 100]);
    }

    #[test]
    fn a_bad_file_is_refused_with_one_line_naming_the_problem() {
        let cases = [
            ("[channels.x]\ntype = \"pager\"\n", "pager"),
            (
                "[approvals]\nnotify = [\"nobody\"]\n",
                "approvals.notify names channel `nobody`",
            ),
            (
                "[channels.x]\ntype = \"webhook\"\nurl = \"http://h/\"\nsecret_env = \"NOT_SET\"\n",
                "`NOT_SET` is not set",
            ),
            (
                "[channels.x]\ntype = \"slack\"\nurl = \"ftp://h/\"\n",
                "not http or https",
            ),
            (
                "[channels.x]\ntype = \"email\"\nsmtp = \"mail\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n",
                "is not HOST:PORT",
            ),
            (
                "[approvals]\nescalate = [{ after = \"soon\", notify = [] }]\n",
                "approvals.escalate[0].after",
            ),
            ("[budget]\npercent = [75]\n", "75 is not a mark"),
            ("[delivery]\nretries = 3\n", "unknown field `retries`"),
            ("[approvals\n", "line 1, column"),
        ];
        for (text, expected) in cases {
            let e = parse(text).expect_err(text);
            assert!(e.contains(expected), "{text:?}: {e}");
            assert!(e.starts_with("n.toml: "), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
