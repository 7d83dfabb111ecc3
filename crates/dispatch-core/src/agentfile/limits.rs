//! `CONCURRENCY` and `RATE_LIMIT` (see [`crate::concurrency`]).

use crate::concurrency::{ConcurrencySpec, Rate, RateLimit, RateScope, Strategy, check_key_source};

const CONCURRENCY_HINT: &str = "(hint: `CONCURRENCY KEY payload.customer_id MAX 2 STRATEGY queue`)";
const RATE_HINT: &str = "(hint: `RATE_LIMIT MODEL gpt-4o-mini REQUESTS 500/min TOKENS 200000/min`)";

/// `CONCURRENCY KEY <source> MAX <n> [STRATEGY queue|cancel-in-progress|drop]`.
pub(super) fn parse_concurrency(args: &[String]) -> Result<ConcurrencySpec, String> {
    let word = |i: usize| args.get(i).map(|s| s.to_ascii_uppercase());
    if word(0).as_deref() != Some("KEY") {
        return Err(format!("CONCURRENCY expects KEY first {CONCURRENCY_HINT}"));
    }
    let key = args
        .get(1)
        .ok_or_else(|| format!("CONCURRENCY KEY needs a source {CONCURRENCY_HINT}"))?;
    check_key_source(key)?;
    if word(2).as_deref() != Some("MAX") {
        return Err(format!(
            "CONCURRENCY KEY {key} needs MAX <n> {CONCURRENCY_HINT}"
        ));
    }
    let max = args
        .get(3)
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!(
                "CONCURRENCY MAX expects a whole number of at least 1, got `{}` {CONCURRENCY_HINT}",
                args.get(3).map_or("", String::as_str)
            )
        })?;
    let strategy = match (word(4).as_deref(), args.get(5), args.len()) {
        (None, _, _) => Strategy::Queue,
        (Some("STRATEGY"), Some(s), 6) => s.parse()?,
        _ => {
            return Err(format!(
                "unexpected `{}` after MAX {max} {CONCURRENCY_HINT}",
                args[4..].join(" ")
            ));
        }
    };
    Ok(ConcurrencySpec {
        key: key.clone(),
        max,
        strategy,
    })
}

/// `RATE_LIMIT MODEL|PROVIDER <name> [REQUESTS n/<window>] [TOKENS n/<window>]`.
pub(super) fn parse_rate_limit(args: &[String]) -> Result<RateLimit, String> {
    let scope = match args.first().map(|s| s.to_ascii_uppercase()).as_deref() {
        Some("MODEL") => RateScope::Model,
        Some("PROVIDER") => RateScope::Provider,
        _ => {
            return Err(format!(
                "RATE_LIMIT expects MODEL or PROVIDER first {RATE_HINT}"
            ));
        }
    };
    let name = args
        .get(1)
        .ok_or_else(|| format!("RATE_LIMIT needs a model or provider name {RATE_HINT}"))?
        .clone();
    let mut limit = RateLimit {
        scope,
        name,
        requests: None,
        tokens: None,
    };
    let mut rest = args[2..].iter();
    while let Some(word) = rest.next() {
        let slot = match word.to_ascii_uppercase().as_str() {
            "REQUESTS" => &mut limit.requests,
            "TOKENS" => &mut limit.tokens,
            _ => return Err(format!("unexpected `{word}` in RATE_LIMIT {RATE_HINT}")),
        };
        let value = rest
            .next()
            .ok_or_else(|| format!("RATE_LIMIT {word} needs a rate such as 500/min {RATE_HINT}"))?;
        if slot.replace(Rate::parse(value)?).is_some() {
            return Err(format!("RATE_LIMIT sets {word} twice {RATE_HINT}"));
        }
    }
    if limit.requests.is_none() && limit.tokens.is_none() {
        return Err(format!(
            "RATE_LIMIT needs REQUESTS or TOKENS (or both) {RATE_HINT}"
        ));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use crate::agentfile::parse;
    use crate::concurrency::{Rate, RateScope, Strategy};

    const AGENT: &str = "FROM agent\nNAME a\nMODEL gpt-4o-mini\n";

    #[test]
    fn concurrency_lines_parse_with_defaults() {
        let af = parse("FROM noop\nNAME a\nCONCURRENCY KEY payload.customer_id MAX 2\n")
            .expect("as the test says");
        let c = af.manifest.concurrency.expect("as the test says");
        assert_eq!(
            (c.key.as_str(), c.max, c.strategy),
            ("payload.customer_id", 2, Strategy::Queue)
        );
        let af = parse("FROM noop\nNAME a\nconcurrency key label.team max 1 strategy DROP\n")
            .expect("as the test says");
        assert_eq!(
            af.manifest.concurrency.expect("as the test says").strategy,
            Strategy::Drop
        );
        let af =
            parse("FROM noop\nNAME a\nCONCURRENCY KEY payload MAX 1 STRATEGY cancel-in-progress\n")
                .expect("as the test says");
        assert_eq!(
            af.manifest.concurrency.expect("as the test says").strategy,
            Strategy::CancelInProgress
        );
    }

    #[test]
    fn bad_concurrency_lines_name_their_line() {
        for (line, want) in [
            ("CONCURRENCY payload.x MAX 2", "expects KEY first"),
            (
                "CONCURRENCY KEY customer MAX 2",
                "must start with `payload.`",
            ),
            ("CONCURRENCY KEY payload.x", "needs MAX"),
            ("CONCURRENCY KEY payload.x MAX 0", "at least 1"),
            ("CONCURRENCY KEY payload.x MAX two", "at least 1"),
            (
                "CONCURRENCY KEY payload.x MAX 2 STRATEGY newest",
                "unknown concurrency strategy",
            ),
            (
                "CONCURRENCY KEY payload.x MAX 2 PLEASE",
                "unexpected `PLEASE`",
            ),
        ] {
            let err = parse(&format!("FROM noop\nNAME a\n\n{line}\n")).expect_err("refused");
            assert_eq!(err.line, 4, "{line}: {err}");
            assert!(err.message.contains(want), "{line}: {err}");
        }
        let err = parse(
            "FROM noop\nNAME a\nCONCURRENCY KEY payload.x MAX 1\nCONCURRENCY KEY payload.y MAX 1\n",
        )
        .expect_err("refused");
        assert!(err.message.contains("duplicate CONCURRENCY"), "{err}");
    }

    #[test]
    fn rate_limits_parse_per_model_and_provider() {
        let af = parse(&format!(
            "{AGENT}RATE_LIMIT MODEL gpt-4o-mini REQUESTS 500/min TOKENS 200000/min\nRATE_LIMIT PROVIDER openai REQUESTS 10/10s\n"
        ))
        .expect("as the test says");
        let limits = af.manifest.agent.expect("as the test says").rate_limits;
        assert_eq!(limits.len(), 2);
        assert_eq!(limits[0].scope, RateScope::Model);
        assert_eq!(
            limits[0].requests,
            Some(Rate {
                limit: 500,
                window_ms: 60_000
            })
        );
        assert_eq!(
            limits[0].tokens,
            Some(Rate {
                limit: 200_000,
                window_ms: 60_000
            })
        );
        assert_eq!(limits[1].bucket(), "provider:openai");
        assert_eq!(limits[1].tokens, None);
    }

    #[test]
    fn bad_rate_limit_lines_name_their_line() {
        for (line, want) in [
            (
                "RATE_LIMIT gpt-4o-mini REQUESTS 5/min",
                "MODEL or PROVIDER first",
            ),
            ("RATE_LIMIT MODEL gpt-4o-mini", "needs REQUESTS or TOKENS"),
            ("RATE_LIMIT MODEL gpt-4o-mini REQUESTS", "needs a rate"),
            (
                "RATE_LIMIT MODEL gpt-4o-mini REQUESTS 5/fortnight",
                "invalid rate",
            ),
            (
                "RATE_LIMIT MODEL gpt-4o-mini REQUESTS 0/min",
                "admits nothing",
            ),
            (
                "RATE_LIMIT MODEL gpt-4o-mini CALLS 5/min",
                "unexpected `CALLS`",
            ),
            (
                "RATE_LIMIT MODEL gpt-4o-mini REQUESTS 5/min REQUESTS 6/min",
                "twice",
            ),
        ] {
            let err = parse(&format!("{AGENT}{line}\n")).expect_err("refused");
            assert_eq!(err.line, 4, "{line}: {err}");
            assert!(err.message.contains(want), "{line}: {err}");
        }
        let err =
            parse("FROM noop\nNAME a\nRATE_LIMIT MODEL m REQUESTS 1/s\n").expect_err("refused");
        assert!(err.message.contains("native agents"), "{err}");
    }
}
