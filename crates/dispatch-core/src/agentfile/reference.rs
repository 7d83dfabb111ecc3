//! Markdown generated from the directive registry: the book's reference page
//! (`docs/reference/agentfile.md`) and the table of
//! `docs/agentfile-compat.md`. A test in the CLI compares both with the files.

use super::directives::{ALIASES, DIRECTIVES, Upstream};
use crate::units::{DURATION_FORMS, SIZE_FORMS};

/// The markers around the generated table of `docs/agentfile-compat.md`.
pub const COMPAT_BEGIN: &str = "<!-- BEGIN generated from the directive registry (crates/dispatch-core/src/agentfile/upstream_forms.rs) by `dispatch internal reference agentfile-compat`; do not edit. -->";
pub const COMPAT_END: &str = "<!-- END generated -->";

/// The book's Agentfile reference page (`docs/reference/agentfile.md`), as
/// Markdown: every directive, the Dockerfile words that mean another
/// directive here, the directives refused with their reason, and the
/// grammar of sizes and durations.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Agentfile directives\n\n<!-- Generated from crates/dispatch-core/src/agentfile/directive_table.rs by `dispatch internal reference agentfile`; do not edit. -->\n\n\
         One directive per line; a line starting with `#` is a comment; a line ending in `\\` continues on the next. \
         Directive names are case-insensitive. The [Agentfile guide](../guide/agentfile.md) shows them together, \
         and [upstream compatibility](../agentfile-compat.md) maps upstream Dispatch's meaning onto ours. \
         `dispatch reference agentfile NAME` prints one directive's entry (your shell completes the names after \
         `source <(dispatch completion bash)`).\n\n\
         | directive | expects | arguments | at most once | example |\n|---|---|---|---|---|\n",
    );
    for d in DIRECTIVES.iter().filter(|d| d.refused().is_none()) {
        let once = if d.once { "yes" } else { "" };
        out.push_str(&format!(
            "| `{}` | {} | {} | {once} | `{}` |\n",
            d.name,
            cell(d.expects),
            d.args.describe(),
            cell(d.example)
        ));
    }
    out.push_str("\n## Dockerfile words\n\nUnknown here; the error names the directive that means it:\n\n| word | use |\n|---|---|\n");
    for (from, to) in ALIASES {
        out.push_str(&format!("| `{from}` | `{to}` |\n"));
    }
    out.push_str("\n## Refused\n\nUpstream directives Dispatch cannot honour are refused at build, naming the line:\n\n| directive | why |\n|---|---|\n");
    for d in DIRECTIVES {
        if let Some(why) = d.refused() {
            out.push_str(&format!("| `{}` | {} |\n", d.name, cell(why)));
        }
    }
    out.push_str(&format!(
        "\n## Sizes and durations\n\n\
         One grammar for every size and every duration, in an Agentfile as in CLI flags, environment \
         variables, notification and retention settings:\n\n\
         - **size**: {}. `K`, `M`, `G`, `T` are binary (`1G` = 1024M = 2^30 bytes), \
         and `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`, `TB`/`TiB` mean the same; case does not matter; above zero.\n\
         - **duration**: {}; case does not matter. A bare number is seconds where an older Dispatch read it so \
         (Agentfile durations, run policies such as `--step-timeout` and `--backoff`, `--queue-timeout`, `--expires`, \
         eval and skill timeouts); elsewhere (`--since`, `--older-than`, `--retention`, notification settings) a unit is required.\n",
        cell(SIZE_FORMS),
        cell(DURATION_FORMS)
    ));
    out
}

/// The table of `docs/agentfile-compat.md` (between [`COMPAT_BEGIN`] and
/// [`COMPAT_END`]): every form of every upstream directive, what upstream
/// means by it and what Dispatch does; then our own directives.
pub fn compat_markdown() -> String {
    let mut out =
        format!("{COMPAT_BEGIN}\n\n| directive | upstream meaning | here |\n|---|---|---|\n");
    let mut ours = Vec::new();
    for d in DIRECTIVES {
        match &d.upstream {
            Upstream::Ours => ours.push(format!("`{}`", d.name)),
            Upstream::AsOurs => out.push_str(&format!("| `{}` | as ours | supported |\n", d.name)),
            Upstream::Forms(forms) => {
                for f in *forms {
                    out.push_str(&format!(
                        "| {} | {} | {} |\n",
                        cell(f.form),
                        cell(f.upstream),
                        cell(f.here)
                    ));
                }
            }
        }
    }
    out.push_str(&format!(
        "\nOurs only (upstream's Agentfile has no such directive): {}.\n\n{COMPAT_END}\n",
        ours.join(", ")
    ));
    out
}

/// `page` with its generated compatibility table replaced by `table`; `None`
/// when the markers are missing.
pub fn splice_compat(page: &str, table: &str) -> Option<String> {
    let start = page.find(COMPAT_BEGIN)?;
    let end = page[start..].find(COMPAT_END)? + start + COMPAT_END.len();
    let end = end + usize::from(page[end..].starts_with('\n'));
    Some(format!("{}{table}{}", &page[..start], &page[end..]))
}

/// A table cell: pipes escaped, and `<`/`>` outside code spans written as
/// entities (Markdown would take `<n>` for an HTML tag).
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut code = false;
    for c in text.chars() {
        match c {
            '`' => {
                code = !code;
                out.push(c);
            }
            '|' => out.push_str("\\|"),
            '<' if !code => out.push_str("&lt;"),
            '>' if !code => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compat_table_is_spliced_between_its_markers() {
        let page = format!("# t\n\nbefore\n\n{COMPAT_BEGIN}\nold\n{COMPAT_END}\n\nafter\n");
        let new = splice_compat(&page, &compat_markdown()).expect("markers");
        assert!(new.starts_with("# t\n\nbefore\n\n<!-- BEGIN"), "{new}");
        assert!(new.ends_with("<!-- END generated -->\n\nafter\n"), "{new}");
        assert!(!new.contains("\nold\n"));
        assert_eq!(
            splice_compat(&new, &compat_markdown()).as_deref(),
            Some(new.as_str())
        );
        assert_eq!(splice_compat("no markers", "x"), None);
    }

    #[test]
    fn every_upstream_form_and_every_ours_directive_is_in_the_table() {
        let table = compat_markdown();
        assert!(
            table.contains("| `TEST tool:&lt;alias&gt;`")
                || table.contains("| `TEST tool:<alias>`")
        );
        assert!(table.contains("| `NAME` | as ours | supported |"));
        assert!(table.contains("`RATE_LIMIT`"), "ours listed");
        // A pipe inside a cell never splits the row.
        for row in table.lines().filter(|l| l.starts_with("| ")) {
            let cells = row.replace("\\|", "").matches('|').count();
            assert_eq!(cells, 4, "{row}");
        }
    }
}
