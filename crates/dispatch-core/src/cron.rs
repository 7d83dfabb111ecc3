//! Cron expressions (`croner`, seconds-aware): parsed where the Agentfile is
//! read, so `dispatch build` refuses what `dispatch serve` could not run.

use croner::Cron;

const FIELDS_5: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const FIELDS_6: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

/// Parses a cron expression of 5 fields, 6 with seconds first, or an alias
/// (`@daily`, …). A mistake names the field at fault.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if let [alias] = fields.as_slice()
        && alias.starts_with('@')
    {
        // @yearly, @monthly, @weekly, @daily, @hourly
        return Cron::new(alias).parse().map_err(|e| {
            format!("invalid cron expression `{expr}`: {e} (hint: @yearly, @monthly, @weekly, @daily or @hourly)")
        });
    }
    let names: &[&str] = match fields.len() {
        5 => &FIELDS_5,
        6 => &FIELDS_6,
        n => {
            return Err(format!(
                "invalid cron expression `{expr}`: {n} fields, expected 5 (minute hour day-of-month month day-of-week) or 6 (seconds first) (hint: \"*/10 * * * * *\" is every 10 seconds)"
            ));
        }
    };
    let parse = |e: &str| Cron::new(e).with_seconds_optional().parse();
    let err = match parse(expr) {
        Ok(cron) => return Ok(cron),
        Err(e) => e,
    };
    // Which field? Try each alone, with every other field a wildcard.
    let culprit = (0..fields.len()).find(|&i| {
        let probe: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { fields[j] } else { "*" })
            .collect();
        parse(&probe.join(" ")).is_err()
    });
    Err(match culprit {
        Some(i) => format!(
            "invalid cron expression `{expr}`: the {} field `{}` is not valid ({err}) (hint: \"*/10 * * * * *\" is every 10 seconds)",
            names[i], fields[i]
        ),
        None => format!("invalid cron expression `{expr}`: {err}"),
    })
}
