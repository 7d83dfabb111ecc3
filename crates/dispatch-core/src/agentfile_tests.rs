use super::*;
use crate::parcel::{Requirement, RetryPolicy};
use proptest::prelude::*;

pub(super) fn ok(text: &str) -> Agentfile {
    parse(text).expect("agentfile parses")
}

pub(super) fn err(text: &str) -> AgentfileError {
    parse(text).expect_err("agentfile is refused")
}

/// A minimal valid Agentfile followed by `extra`.
fn with(extra: &str) -> String {
    format!("NAME a\nCOMMAND sh a.sh\n{extra}\n")
}

#[test]
fn minimal_file_gets_defaults() {
    let af = ok("NAME my-agent\nCOMMAND sh agent.sh --x\n");
    assert_eq!(af.manifest.name, "my-agent");
    assert_eq!(af.manifest.courier, Courier::Process);
    assert_eq!(af.manifest.entrypoint, Operation::Job);
    assert_eq!(
        af.manifest.command,
        vec!["/bin/sh", "-c", "sh agent.sh --x"]
    );
    assert!(af.copies.is_empty() && af.manifest.retry.is_none() && af.manifest.listen.is_none());
}

#[test]
fn every_directive_is_parsed() {
    let text = r#"
# a full example
from process
NAME full.agent_1
VERSION "1.2 beta"
LABEL team=research owner="Ann Lee"
ENTRYPOINT heartbeat
COMMAND ["python3", "agent.py", "--fast"]
ENV A=1 B="two words"
ENV C three words
SECRET API_KEY HOOK_SECRET
SECRET API_KEY
COPY agent.py
COPY lib tools/
IDENTITY identity.md
SOUL "be kind"
SKILL skills/review.md skills/plan.txt
PROMPT first
PROMPT prompts/second.md
TIMEOUT 30m
TIMEOUT STEP 500ms
RETRY 4 BACKOFF 2s..1m
LIMIT TOKENS 100_000
LIMIT TOKENS 80000 SOFT
LIMIT COST $2.50
LIMIT COST 1.5 soft
REQUIRES REDIS_URL redis://localhost:6379
REQUIRES DB postgres://u@db/x
SCHEDULE "0 */5 * * * *"
SCHEDULE @hourly
LISTEN 127.0.0.1:8080
LISTEN_PATH /hook
LISTEN_METHOD post get
LISTEN_METHOD POST,put
LISTEN_SECRET HOOK_SECRET
LISTEN_MAX_BODY_BYTES 1048576
LISTEN_MAX_HEADER_BYTES 16384
"#;
    let af = ok(text);
    assert_eq!(af.manifest.name, "full.agent_1");
    assert_eq!(af.manifest.version.as_deref(), Some("1.2 beta"));
    assert_eq!(
        af.manifest.labels.get("team").map(String::as_str),
        Some("research")
    );
    assert_eq!(
        af.manifest.labels.get("owner").map(String::as_str),
        Some("Ann Lee")
    );
    assert_eq!(af.manifest.entrypoint, Operation::Heartbeat);
    assert_eq!(af.manifest.command, vec!["python3", "agent.py", "--fast"]);
    let env: Vec<(&str, &str)> = af
        .manifest
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        vec![("A", "1"), ("B", "two words"), ("C", "three words")]
    );
    assert_eq!(af.manifest.secrets, vec!["API_KEY", "HOOK_SECRET"]);
    assert_eq!(af.copies.len(), 2);
    assert_eq!(af.copies[0].src, "agent.py");
    assert_eq!(af.copies[0].dest, "agent.py");
    assert!(!af.copies[0].dest_is_dir);
    assert_eq!(
        (af.copies[1].dest.as_str(), af.copies[1].dest_is_dir),
        ("tools", true)
    );
    let identity = af.identity.expect("identity");
    assert_eq!(
        (identity.text.as_str(), identity.quoted),
        ("identity.md", false)
    );
    let soul = af.soul.expect("soul");
    assert_eq!((soul.text.as_str(), soul.quoted), ("be kind", true));
    let skills: Vec<(&str, &str)> = af
        .skills
        .iter()
        .map(|s| (s.name.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        skills,
        vec![("review", "skills/review.md"), ("plan", "skills/plan.txt")]
    );
    let prompts: Vec<&str> = af.prompts.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(prompts, vec!["first", "prompts/second.md"]);
    assert_eq!(af.manifest.timeouts.run_ms, Some(1_800_000));
    assert_eq!(af.manifest.timeouts.step_ms, Some(500));
    assert_eq!(
        af.manifest.retry,
        Some(RetryPolicy {
            max_attempts: 4,
            backoff_initial_ms: 2_000,
            backoff_max_ms: 60_000
        })
    );
    assert_eq!(af.manifest.limits.max_tokens, Some(100_000));
    assert_eq!(af.manifest.limits.soft_max_tokens, Some(80_000));
    assert_eq!(af.manifest.limits.max_cost_usd, Some(2.5));
    assert_eq!(af.manifest.limits.soft_max_cost_usd, Some(1.5));
    assert_eq!(af.manifest.requires.len(), 2);
    assert_eq!(
        af.manifest.requires[0],
        Requirement {
            name: "REDIS_URL".into(),
            url: "redis://localhost:6379".into()
        }
    );
    assert_eq!(af.manifest.schedules, vec!["0 */5 * * * *", "@hourly"]);
    let listen = af.manifest.listen.expect("listen");
    assert_eq!(listen.addr.as_deref(), Some("127.0.0.1:8080"));
    assert_eq!(listen.path.as_deref(), Some("/hook"));
    assert_eq!(listen.methods, vec!["POST", "GET", "PUT"]);
    assert_eq!(listen.secret.as_deref(), Some("HOOK_SECRET"));
    assert_eq!(listen.max_body_bytes, Some(1_048_576));
    assert_eq!(listen.max_header_bytes, Some(16_384));
}

#[test]
fn any_listen_directive_creates_a_listen_policy() {
    let af = ok(&with("LISTEN_PATH /x"));
    assert_eq!(
        af.manifest.listen.and_then(|l| l.path).as_deref(),
        Some("/x")
    );
}

#[test]
fn retry_defaults_and_single_backoff() {
    let r = ok(&with("RETRY 3")).manifest.retry.expect("retry");
    assert_eq!(
        (r.max_attempts, r.backoff_initial_ms, r.backoff_max_ms),
        (3, 1_000, 30_000)
    );
    let r = ok(&with("RETRY 2 backoff 45s"))
        .manifest
        .retry
        .expect("retry");
    assert_eq!((r.backoff_initial_ms, r.backoff_max_ms), (45_000, 45_000));
}

#[test]
fn durations() {
    assert_eq!(duration_ms("500ms"), Ok(500));
    assert_eq!(duration_ms("30s"), Ok(30_000));
    assert_eq!(duration_ms("5m"), Ok(300_000));
    assert_eq!(duration_ms("2h"), Ok(7_200_000));
    assert_eq!(duration_ms("90"), Ok(90_000));
    for bad in ["", "s", "5x", "1.5s", "-1s", "99999999999999999999h"] {
        assert!(duration_ms(bad).is_err(), "{bad}");
    }
}

#[test]
fn command_shell_and_exec_forms() {
    assert_eq!(
        ok(&with("")).manifest.command,
        vec!["/bin/sh", "-c", "sh a.sh"]
    );
    let af = ok("NAME a\nCOMMAND [\"sh\", \"a b.sh\"]\n");
    assert_eq!(af.manifest.command, vec!["sh", "a b.sh"]);
    let e = err("NAME a\nCOMMAND [\"sh\", 1]\n");
    assert_eq!(e.line, 2);
    assert!(e.message.contains("not a JSON array of strings"), "{e}");
    assert!(err("NAME a\nCOMMAND []\n").message.contains("empty"));
}

#[test]
fn continuation_lines_keep_the_first_line_number() {
    let af = ok("NAME a\nCOMMAND python3 agent.py \\\n  # a comment\n  --fast \\\n  --verbose\n");
    assert_eq!(af.manifest.command[2], "python3 agent.py --fast --verbose");
    let e = err("NAME a\nCOMMAND sh a.sh\nTIMEOUT \\\n  forever\n");
    assert_eq!(e.line, 3);
}

#[test]
fn comments_blank_lines_crlf_and_case() {
    let af = ok("\r\n# comment\r\n   name a\r\n\r\ncommand sh a.sh\r\n");
    assert_eq!(af.manifest.name, "a");
    assert_eq!(af.manifest.command[2], "sh a.sh");
}

#[test]
fn unknown_directive_suggests_the_nearest() {
    let e = err("NAME a\n\nCOMAND sh a.sh\n");
    assert_eq!(
        e.to_string(),
        "line 3: unknown directive `COMAND` (did you mean `COMMAND`?)"
    );
    assert!(
        err(&with("CMD x"))
            .message
            .contains("did you mean `COMMAND`?")
    );
    assert!(
        err(&with("secrets X"))
            .message
            .contains("did you mean `SECRET`?")
    );
    let e = err(&with("QQQQ x"));
    assert!(e.message.contains("known directives are FROM, NAME"), "{e}");
}

#[test]
fn missing_required_directives() {
    let e = err("COMMAND sh a.sh\n");
    assert!(e.message.starts_with("missing NAME (hint:"), "{e}");
    let e = err("NAME a\n\n");
    assert_eq!(
        e.to_string(),
        "line 2: missing COMMAND (hint: add a line such as `COMMAND sh agent.sh`)"
    );
    assert_eq!(err("").line, 1);
}

#[test]
fn duplicates_name_both_lines() {
    for (extra, key) in [
        ("NAME b", "NAME"),
        ("COMMAND x", "COMMAND"),
        ("VERSION 1\nVERSION 2", "VERSION"),
        ("FROM process\nFROM process", "FROM"),
        ("ENTRYPOINT job\nENTRYPOINT job", "ENTRYPOINT"),
        ("IDENTITY x\nIDENTITY y", "IDENTITY"),
        ("SOUL x\nSOUL y", "SOUL"),
        ("TIMEOUT 1s\nTIMEOUT RUN 2s", "TIMEOUT RUN"),
        ("RETRY 1\nRETRY 2", "RETRY"),
        ("LISTEN :1\nLISTEN :2", "LISTEN"),
    ] {
        let e = err(&with(extra));
        assert!(
            e.message
                .starts_with(&format!("duplicate {key}: it is already set on line")),
            "{e}"
        );
        let first = if matches!(key, "NAME" | "COMMAND") {
            1 + usize::from(key == "COMMAND")
        } else {
            3
        };
        assert!(e.message.contains(&format!("line {first}")), "{e}");
        assert!(e.line > first, "{e}");
    }
}

#[test]
fn missing_arguments_say_what_is_expected() {
    let e = err("NAME a\nCOMMAND x\nCOPY\n");
    assert_eq!(e.line, 3);
    assert!(e.message.starts_with("COPY expects a source"), "{e}");
    assert!(
        err("NAME\n")
            .message
            .contains("NAME expects a name (hint: `NAME my-agent`)")
    );
    assert!(
        err(&with("SCHEDULE \"\""))
            .message
            .starts_with("SCHEDULE expects a cron expression")
    );
    assert!(
        err(&with("ENV KEY"))
            .message
            .contains("ENV KEY needs a value")
    );
}

#[test]
fn value_errors_have_line_numbers_and_hints() {
    let cases: &[(&str, &str)] = &[
        (
            "FROM docker",
            "unknown courier `docker` (hint: known couriers: process, agent",
        ),
        (
            "ENTRYPOINT [\"x\"]",
            "ENTRYPOINT expects `job`, `heartbeat` or `chat`",
        ),
        ("ENV 1A=x", "not a valid environment variable name"),
        ("ENV A=1 B", "ENV expects KEY=value pairs"),
        ("LABEL team", "LABEL expects key=value pairs"),
        ("SECRET KEY=abc", "SECRET takes only a name"),
        ("SECRET my-key", "not a valid secret name"),
        ("TIMEOUT soon", "invalid duration `soon`"),
        ("TIMEOUT STEP 0s", "greater than zero"),
        ("RETRY 0", "at least 1"),
        ("RETRY 3 BACKOFF 1m..1s", "longer than max"),
        ("LIMIT TOKENS lots", "whole number"),
        ("LIMIT COST -1", "greater than zero"),
        ("LIMIT MEMORY 1", "LIMIT expects TOKENS"),
        ("REQUIRES REDIS localhost:6379", "URL with a scheme"),
        ("REQUIRES redis-url redis://x", "not a valid REQUIRES name"),
        (
            "REQUIRES A redis://x\nREQUIRES A http://y",
            "already declared on line 3",
        ),
        ("LISTEN localhost", "address with a port"),
        (
            "LISTEN_PATH hook",
            "must start with `/`, got `hook` (hint: `LISTEN_PATH /hook`)",
        ),
        ("LISTEN_METHOD P0ST", "HTTP methods"),
        ("LISTEN_MAX_BODY_BYTES 0", "greater than zero"),
        ("LISTEN_SIGNATURE gitlab H", "unknown scheme `gitlab`"),
        (
            "LISTEN_SIGNATURE github",
            "expects a scheme and a SECRET name",
        ),
        ("LISTEN_SIGNATURE github H 5m", "GitHub signs no timestamp"),
        ("LISTEN_SIGNATURE stripe H 10ms", "under a second"),
        (
            "LISTEN_SIGNATURE stripe H",
            "LISTEN_SIGNATURE names `H`, which is not a declared SECRET (hint: add `SECRET H`)",
        ),
        (
            "SKILL a.md\nSKILL b/a.txt",
            "SKILL `a` is already defined on line 3",
        ),
        ("LABEL a=\"unterminated", "unterminated \" quote"),
    ];
    for (extra, want) in cases {
        let e = err(&with(extra));
        assert!(e.line >= 3, "{extra}: {e}");
        assert!(e.message.contains(want), "{extra}: got {e}");
    }
}

#[test]
fn name_must_be_lowercase() {
    let e = err("NAME My Agent\n");
    let want = "NAME expects a name, got `My Agent` (hint: `NAME my-agent`)";
    assert_eq!(e.message, want);
    let e = err("NAME My_Agent\nCOMMAND x\n");
    assert_eq!(e.line, 1);
    assert!(
        e.message.contains("lowercase") && e.message.contains("`NAME my_agent`"),
        "{e}"
    );
    assert!(err("NAME -a\nCOMMAND x\n").message.contains("`NAME a`"));
}

#[test]
fn copy_paths_must_stay_inside_the_context() {
    let e = err(&with("COPY ../secret.txt"));
    assert_eq!(e.line, 3);
    assert!(e.message.contains("outside the build context"), "{e}");
    assert!(
        err(&with("COPY /etc/passwd"))
            .message
            .contains("absolute path")
    );
    assert!(err(&with("COPY a/../../b")).message.contains("outside"));
    assert!(
        err(&with("COPY a ../b"))
            .message
            .contains("COPY destination `../b`")
    );
    assert!(
        err(&with("COPY a b c"))
            .message
            .starts_with("COPY expects a source and an optional destination, got `a b c`")
    );
    assert!(err(&with("SKILL ../x.md")).message.contains("outside"));
    let af = ok(&with("COPY ./a/../b/ .\nCOPY . "));
    assert_eq!(
        (af.copies[0].src.as_str(), af.copies[0].dest.as_str()),
        ("b", "")
    );
    assert!(af.copies[0].dest_is_dir);
    assert_eq!(
        (af.copies[1].src.as_str(), af.copies[1].dest.as_str()),
        ("", "")
    );
}

#[test]
fn listen_secret_must_be_declared() {
    let e = err(&with("LISTEN_SECRET HOOK\nSECRET OTHER"));
    assert_eq!(e.line, 3);
    assert!(e.message.contains("add `SECRET HOOK`"), "{e}");
    ok(&with("LISTEN_SECRET HOOK\nSECRET HOOK"));
}

#[test]
fn a_secret_value_is_never_in_env() {
    let e = err(&with("SECRET TOKEN\nENV TOKEN=abc"));
    assert_eq!(e.line, 4);
    assert!(e.message.contains("declared as SECRET on line 3"), "{e}");
}

#[test]
fn display_is_line_colon_message() {
    assert_eq!(AgentfileError::new(7, "boom").to_string(), "line 7: boom");
}

proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC*") {
        let _ = parse(&text);
    }

    #[test]
    fn parse_never_panics_on_directive_soup(
        lines in proptest::collection::vec(
            (proptest::sample::select(DIRECTIVES.iter().map(|d| d.name).collect::<Vec<_>>()),
             "[ a-zA-Z0-9_=\"'\\\\\\[\\]/.:,$*-]{0,24}"),
            0..12,
        )
    ) {
        let text: String = lines.iter().map(|(d, a)| format!("{d} {a}\n")).collect();
        if let Err(e) = parse(&text) {
            prop_assert!(e.line >= 1);
            prop_assert!(!e.message.is_empty());
        }
    }
}

#[test]
fn the_noop_courier_needs_no_command() {
    let af = ok("FROM noop\nNAME bench\n");
    assert_eq!(af.manifest.courier, Courier::Noop);
    assert!(af.manifest.command.is_empty());
    let e = err("FROM process\nNAME bench\n");
    assert!(e.to_string().contains("missing COMMAND"), "{e}");
}

const AGENT: &str = "FROM agent\nNAME triage\n";

#[test]
fn a_native_agent_parses_models_fallbacks_prices_and_limits() {
    let text = format!(
        "{AGENT}MODEL gpt-4o-mini PROVIDER openai KEY OPENAI_API_KEY\n\
         FALLBACK claude-haiku-4-5 PROVIDER anthropic KEY ANTHROPIC_API_KEY\n\
         FALLBACK llama3.2 BASE_URL http://127.0.0.1:11434/v1/\n\
         SECRET OPENAI_API_KEY ANTHROPIC_API_KEY\n\
         PRICE llama3.2 INPUT 0.1 OUTPUT $0.2\n\
         LIMIT TOKENS 20000\nLIMIT TOOL_ROUNDS 8\nLIMIT OUTPUT_TOKENS 500\n\
         LIMIT CONTEXT_TOKENS 9000\nTIMEOUT LLM 60s\nENTRYPOINT chat\n"
    );
    let af = parse(&text).expect("valid native agent");
    let m = &af.manifest;
    assert_eq!(m.courier, Courier::Agent);
    assert_eq!(m.entrypoint, Operation::Chat);
    assert!(m.command.is_empty());
    let a = m.agent.as_ref().expect("agent config");
    let names: Vec<&str> = a.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["gpt-4o-mini", "claude-haiku-4-5", "llama3.2"]);
    use crate::agent::ProviderKind;
    assert_eq!(a.models[1].provider, ProviderKind::Anthropic);
    assert_eq!(a.models[2].provider, ProviderKind::OpenaiCompatible);
    assert_eq!(
        a.models[2].base_url.as_deref(),
        Some("http://127.0.0.1:11434/v1")
    );
    assert_eq!(a.models[0].key.as_deref(), Some("OPENAI_API_KEY"));
    assert_eq!(a.llm_timeout_ms, Some(60_000));
    assert_eq!(a.max_tool_rounds, Some(8));
    assert_eq!(a.max_output_tokens, Some(500));
    assert_eq!(a.max_context_tokens, Some(9000));
    assert_eq!(m.limits.max_tokens, Some(20000));
    assert_eq!(a.price_of("llama3.2").map(|p| p.output_per_mtok), Some(0.2));
    assert!(!a.allow_truncation, "a cut answer fails the run by default");
}

#[test]
fn limit_output_tokens_may_allow_truncation_and_a_model_needs_a_known_family() {
    let base = "FROM agent\nNAME a\nMODEL gpt-4o-mini\n";
    let af = parse(&format!("{base}LIMIT OUTPUT_TOKENS 64 allow_truncation\n")).expect("valid");
    let a = af.manifest.agent.expect("agent");
    assert_eq!(a.max_output_tokens, Some(64));
    assert!(a.allow_truncation);
    let e = err(&format!("{base}LIMIT OUTPUT_TOKENS 64 PLEASE\n"));
    assert!(e.message.contains("ALLOW_TRUNCATION"), "{e}");
    let g = parse("FROM agent\nNAME a\nMODEL gemini-2.5-flash\n").expect("gemini is native");
    let provider = g.manifest.agent.expect("agent").models[0].provider;
    assert_eq!(provider, crate::agent::ProviderKind::Gemini);
    let e = err("FROM agent\nNAME a\nMODEL gpt-4o-mini\nFALLBACK llama3.2\n");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("FALLBACK model `llama3.2`"), "{e}");
    assert!(e.message.contains("PROVIDER"), "{e}");
}

#[test]
fn reasoning_takes_an_effort_and_a_budget_and_refuses_anything_else() {
    use crate::agent::{Effort, Reasoning};
    let base = "FROM agent\nNAME a\nMODEL claude-haiku-4-5\n";
    let reasoning = |line: &str| {
        parse(&format!("{base}{line}\n")).map(|af| af.manifest.agent.expect("agent").reasoning)
    };
    assert_eq!(
        reasoning("REASONING effort HIGH"),
        Ok(Some(Reasoning {
            effort: Some(Effort::High),
            budget_tokens: None
        }))
    );
    assert_eq!(
        reasoning("REASONING budget 4096 effort low"),
        Ok(Some(Reasoning {
            effort: Some(Effort::Low),
            budget_tokens: Some(4096)
        }))
    );
    for (line, want) in [
        ("REASONING effort extreme", "one of low, medium, high"),
        ("REASONING budget 100", "at least 1024"),
        ("REASONING budget", "`effort <level>`"),
        ("REASONING depth 3", "unknown option `depth`"),
        (
            "REASONING effort low\nREASONING effort high",
            "duplicate REASONING",
        ),
    ] {
        let e = err(&format!("{base}{line}\n"));
        assert!(e.message.contains(want), "{line}: {e}");
        assert!(e.message.contains("hint"), "{line}: {e}");
    }
    let e = err("FROM process\nNAME a\nCOMMAND true\nREASONING effort low\n");
    assert!(e.message.contains("for native agents"), "{e}");
}

#[test]
fn native_courier_aliases_build() {
    for from in [
        "agent",
        "native",
        "dispatch/native",
        "dispatch/native:0.3",
        "AGENT",
    ] {
        let text = format!("FROM {from}\nNAME a\nMODEL gpt-4o-mini\n");
        let af = parse(&text).unwrap_or_else(|e| panic!("FROM {from}: {e}"));
        assert_eq!(af.manifest.courier, Courier::Agent, "FROM {from}");
    }
}

#[test]
fn native_agent_mistakes_are_refused_with_their_line() {
    let cases: &[(&str, &str)] = &[
        ("", "FROM agent needs a MODEL"),
        ("MODEL gpt-4o PROVIDER azure", "unknown PROVIDER `azure`"),
        (
            "MODEL gpt-4o BASE_URL not-a-url",
            "BASE_URL `not-a-url` is not a URL",
        ),
        ("MODEL gpt-4o BASE_URL ftp://x/v1", "http or https"),
        ("MODEL gpt-4o KEY OPENAI_API_KEY", "not a declared SECRET"),
        ("MODEL gpt-4o PROVIDER", "needs a value"),
        ("MODEL gpt-4o COLOR red", "unknown option `COLOR`"),
        ("MODEL gpt-a\nMODEL gpt-b", "duplicate MODEL"),
        ("FALLBACK gpt-b", "FALLBACK without MODEL"),
        ("MODEL gpt-a\nCOMMAND sh x.sh", "takes no COMMAND"),
        ("MODEL gpt-a\nLIMIT TOOL_ROUNDS 0", "greater than zero"),
        (
            "MODEL gpt-a\nPRICE gpt-a INPUT x OUTPUT 1",
            "US dollars per million",
        ),
        ("MODEL gpt-a\nPRICE gpt-a 1 2", "PRICE expects"),
        ("MODEL gpt-a\nTIMEOUT LLM never", "invalid duration"),
    ];
    for (extra, want) in cases {
        let e = err(&format!("{AGENT}{extra}\n"));
        assert!(e.message.contains(want), "{extra}: got {e}");
        assert!(e.line >= 1, "{extra}: {e}");
    }
    let e = err("FROM process\nNAME a\nCOMMAND true\nMODEL gpt-4o\n");
    assert_eq!(e.line, 4);
    assert!(e.message.contains("add `FROM agent`"), "{e}");
}

#[test]
fn what_serve_or_run_would_refuse_is_refused_at_build_with_its_line() {
    let e = err("NAME a\nCOMMAND sh a.sh\nSCHEDULE \"*/10 * * * 99\"\n");
    assert_eq!(e.line, 3);
    assert!(
        e.message.contains("invalid cron expression") && e.message.contains("day-of-week"),
        "{e}"
    );
    let e = err("NAME a\nCOMMAND sh a.sh\nLISTEN_METHOD POST FETCH\n");
    assert_eq!(e.line, 3);
    assert!(e.message.contains("unknown HTTP method `FETCH`"), "{e}");
    let e = err("NAME a\nCOMMAND sh a\u{0}.sh\n");
    assert_eq!(e.line, 2);
    assert!(e.message.contains("NUL byte"), "{e}");
    let huge = format!("NAME a\nCOMMAND sh a.sh\nLABEL {}\n", "x".repeat(5_000_000));
    let e = err(&huge);
    assert!(e.message.len() < 600, "cut: {} bytes", e.message.len());
    assert!(e.message.contains("bytes in all"), "says it was cut");
}

#[test]
fn a_byte_order_mark_is_skipped_and_from_defaults_to_process() {
    let af = parse("\u{feff}NAME a\nCOMMAND sh a.sh\n").expect("a BOM is fine");
    assert_eq!(
        af.manifest.courier,
        Courier::Process,
        "FROM process is the default"
    );
}

#[test]
fn a_container_parcel_names_its_image_resources_and_network() {
    let af = ok(
        "FROM image localhost/agent-py:1\nNAME c\nCOMMAND python agent.py\n\
                 RESOURCES CPUS 1 MEMORY 512M\nRESOURCES PIDS 256 DISK 1G\nNETWORK bridge\n",
    );
    let m = &af.manifest;
    assert_eq!(m.courier, Courier::Image);
    assert_eq!(m.image.as_deref(), Some("localhost/agent-py:1"));
    assert_eq!(m.resources.memory_bytes, Some(512 << 20));
    assert_eq!(m.resources.pids, Some(256));
    assert_eq!(m.network, Some(crate::isolation::Network::Bridge));
}

#[test]
fn sandbox_directives_are_refused_where_they_mean_nothing() {
    let e = err(&with("NETWORK none"));
    assert!(e.message.contains("NETWORK applies to containers"), "{e}");
    let e = err(&with("TOOL_SANDBOX image localhost/tools:1"));
    assert!(e.message.contains("for native agents"), "{e}");
    let e = err(&with("NETWORK wifi"));
    assert!(e.message.contains("none, bridge or host"), "{e}");
    let e = err("FROM image\nNAME c\nCOMMAND x\n");
    assert!(
        e.message.contains("unknown courier") || e.message.contains("image"),
        "{e}"
    );
    let e = err("FROM image localhost/a:1\nNAME c\n");
    assert!(e.message.contains("missing COMMAND"), "{e}");
    let e = err(&with("RESOURCES MEMORY lots"));
    assert!(e.message.contains("size such as"), "{e}");
}

#[test]
fn network_allow_lines_add_up_and_bad_forms_name_their_line() {
    let af = ok(&with(
        "NETWORK allow API.example.com\nNETWORK allow *.corp.example",
    ));
    assert_eq!(af.manifest.egress, ["api.example.com", "*.corp.example"]);
    assert_eq!(af.manifest.network, None);
    for (extra, piece) in [
        ("NETWORK allow a.example:443", "not `a.example:443`"),
        ("NETWORK allow", "needs a host"),
        (
            "NETWORK allow a.example via-egress",
            "`via-egress` is not supported",
        ),
        ("NETWORK allow *", "is not a host name"),
        (
            "NETWORK allow a.example\nNETWORK allow A.example",
            "given twice",
        ),
        ("NETWORK publishers-only", "NETWORK allow <host>"),
    ] {
        let e = err(&with(extra));
        assert!(e.message.contains(piece), "{extra}: {e}");
    }
    let e = err("FROM image localhost/a:1\nNAME c\nCOMMAND x\nNETWORK allow a.example\n");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("not a container"), "{e}");
    let e = err("FROM noop\nNAME c\n\nNETWORK allow a.example\n");
    assert_eq!(e.line, 4, "{e}");
    let e = err(&with("NETWORK none\nNETWORK host"));
    assert!(e.message.contains("duplicate NETWORK"), "{e}");
}

#[test]
fn resources_leave_old_digests_alone() {
    // A manifest without the new directives serializes as before.
    let af = ok(&with(""));
    let json = serde_json::to_string(&af.manifest).expect("serializes");
    for key in ["image", "resources", "network", "tool_sandbox"] {
        assert!(!json.contains(key), "{key} in {json}");
    }
}

/// A native agent with tools `probe` (LOCAL) and `github` (MCP), then `extra`.
fn native_with(extra: &str) -> String {
    format!(
        "FROM agent\nNAME a\nMODEL gpt-4o-mini KEY OPENAI_API_KEY\nSECRET OPENAI_API_KEY\n\
         TOOL LOCAL tools/probe.sh AS probe\nTOOL MCP github COMMAND \"npx gh\"\n{extra}\n"
    )
}

#[test]
fn a_secret_is_scoped_to_the_tools_it_names() {
    let af = ok(&native_with(
        "SECRET GH_TOKEN TO github\nSECRET A B to probe, github\nSECRET GH_TOKEN TO probe",
    ));
    let m = &af.manifest;
    assert_eq!(m.secrets, ["OPENAI_API_KEY", "GH_TOKEN", "A", "B"]);
    assert_eq!(m.secret_tools["GH_TOKEN"], ["github", "probe"]);
    assert_eq!(m.secret_tools["A"], ["probe", "github"]);
    assert!(!m.secret_tools.contains_key("OPENAI_API_KEY"));
    // Unscoped secrets leave the manifest (and so its digest) as it was.
    let plain = ok(&with("SECRET TOKEN"));
    let json = serde_json::to_string(&plain.manifest).expect("json");
    assert!(!json.contains("secret_tools"), "{json}");
}

#[test]
fn a_secret_scoped_to_an_unknown_tool_is_refused_with_its_line() {
    let e = err(&native_with("ENV X=1\nSECRET T TO probe,gitlab"));
    assert_eq!(e.line, 8, "{e}");
    assert!(e.message.contains("`gitlab`, which is not a TOOL"), "{e}");
    assert!(e.message.contains("the tools are: probe, github"), "{e}");
    let e = err(&with("SECRET T TO anything"));
    assert!(e.message.contains("declares no TOOL"), "{e}");
    let e = err(&native_with("SECRET T TO"));
    assert!(e.message.contains("expects tool names"), "{e}");
    let e = err(&native_with("SECRET TO probe"));
    assert!(e.message.contains("names before TO"), "{e}");
}

#[test]
fn listen_signature_names_a_scheme_a_declared_secret_and_a_tolerance() {
    use crate::parcel::{ListenSignature, SignatureScheme};
    let af = ok(&with("SECRET GH\nLISTEN :0\nLISTEN_SIGNATURE GitHub GH"));
    let sig = af.manifest.listen.and_then(|l| l.signature);
    assert_eq!(
        sig,
        Some(ListenSignature {
            scheme: SignatureScheme::Github,
            secret: "GH".into(),
            tolerance_s: None,
        })
    );
    let af = ok(&with("SECRET S\nLISTEN_SIGNATURE stripe S 10m"));
    let sig = af.manifest.listen.and_then(|l| l.signature).expect("sig");
    assert_eq!(
        (sig.scheme, sig.tolerance_s),
        (SignatureScheme::Stripe, Some(600))
    );
    let af = ok(&with("SECRET S\nLISTEN_SIGNATURE hmac-sha256 S"));
    let sig = af.manifest.listen.and_then(|l| l.signature).expect("sig");
    assert_eq!(sig.scheme, SignatureScheme::HmacSha256);
    let e = err(&with(
        "SECRET S\nLISTEN_SIGNATURE github S\nLISTEN_SIGNATURE stripe S",
    ));
    assert_eq!(e.line, 5, "{e}");
}
