//! Small pieces every page shows the same way: times (converted to the
//! viewer's timezone by the script, the exact time in `title`), durations,
//! token counts, costs, statuses, copyable ids.

use dispatch_core::time::{format_rfc3339, human_duration};
use dispatch_core::{RunId, Status, Ts};
use dispatch_store::Run;
use maud::{Markup, html};

/// A time: UTC in the markup, the viewer's local time once the script ran.
pub fn time(ts: Ts) -> Markup {
    let iso = format_rfc3339(ts).unwrap_or_else(|| ts.to_string());
    html! { time datetime=(iso) title=(iso) data-ts=(ts) { (iso) } }
}

/// `1.2s`, `3m04s`, … (or `-`).
pub fn duration(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_string(), |ms| human_duration(ms.max(0)))
}

/// How long the run has taken so far (or took).
pub fn run_duration(run: &Run, now: Ts) -> Option<i64> {
    let start = run.state.started_at()?;
    Some(run.state.ended_at().unwrap_or(now) - start)
}

/// `12,345`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `$0.0123` (or `-` when nothing was spent).
pub fn cost(usd: f64) -> String {
    if usd == 0.0 {
        "-".into()
    } else if usd >= 100.0 {
        format!("${usd:.2}")
    } else {
        format!("${usd:.4}")
    }
}

/// The status as a colored badge (the color is never the only cue: the word is there).
pub fn status(status: Status) -> Markup {
    let name = status.to_string();
    html! { span class={ "status s-" (name) } { (name) } }
}

/// A run's short id linking to its page, with a button that copies the full id.
pub fn run_link(id: &RunId) -> Markup {
    html! {
        span.id {
            a href={ "/ui/runs/" (id) } title=(id) { code { (id.short()) } }
            (copy(id.as_str(), "Copy run id"))
        }
    }
}

/// A button that copies `text` to the clipboard.
pub fn copy(text: &str, label: &str) -> Markup {
    html! {
        button.copy type="button" data-copy=(text) aria-label=(label) title=(label) { "copy" }
    }
}

/// JSON, pretty-printed, as escaped text.
pub fn json(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// At most `max` characters of `text`, marked when cut.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
    }

    #[test]
    fn clipping_respects_characters() {
        assert_eq!(clip("héllo", 2), "hé…");
        assert_eq!(clip("hi", 5), "hi");
    }

    #[test]
    fn agent_text_is_escaped() {
        let markup = html! { p { ("<script>alert(1)</script>") } }.into_string();
        assert_eq!(markup, "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>");
    }
}
