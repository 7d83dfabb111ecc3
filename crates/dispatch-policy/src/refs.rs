//! A policy may only name the inputs Dispatch gives: `input.parcle` would
//! otherwise be undefined at every evaluation and its rule would silently
//! never match. Found by reading the text: comments and strings are
//! skipped, then every `input.NAME` and `input["NAME"]` is checked.

use crate::input::{FIELDS, names};

/// Every `input` reference of the policy: its line (from 0) and the names
/// of its first two steps (none for a bare `input` or `input[…]`).
fn references(text: &str) -> Vec<(usize, Vec<String>)> {
    let code = without_comments_and_strings(text);
    let mut found = Vec::new();
    for (line_no, line) in code.lines().enumerate() {
        let mut rest = line;
        let mut offset = 0;
        while let Some(i) = find_word(rest, "input") {
            found.push((line_no, path_after(&rest[i + "input".len()..])));
            offset += i + "input".len();
            rest = &line[offset..];
        }
    }
    found
}

/// The top-level inputs the policy reads, or `None` when it may read any
/// (a bare `input`, `input[k]`, `import input`).
pub fn reads(text: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for (_, path) in references(text) {
        names.push(path.into_iter().next()?);
    }
    names.sort_unstable();
    names.dedup();
    Some(names)
}

/// Built-in functions whose answer is not a function of the input alone.
const UNSTABLE: &[&str] = &[
    "time.now_ns",
    "rand.",
    "uuid.rfc4122",
    "http.send",
    "opa.runtime",
];

/// Whether the policy calls a built-in whose answer changes from one call to
/// the next (the clock, randomness): its decisions must not be reused.
pub fn is_stable(text: &str) -> bool {
    let code = without_comments_and_strings(text);
    !UNSTABLE.iter().any(|f| code.contains(f))
}

/// Every `input` reference of the policy names a documented input.
pub fn check_inputs(text: &str) -> Result<(), String> {
    let known = names();
    for (line_no, path) in references(text) {
        if let Some(first) = path.first() {
            if !known.contains(&first.as_str()) {
                return Err(format!(
                    "line {}: `input.{first}` is not an input Dispatch gives (hint: the inputs are {})",
                    line_no + 1,
                    known.join(", ")
                ));
            }
            if let (Some(second), Some((_, fields))) =
                (path.get(1), FIELDS.iter().find(|(n, _)| n == first))
                && !fields.contains(&second.as_str())
            {
                return Err(format!(
                    "line {}: `input.{first}.{second}` is not an input Dispatch gives (hint: `input.{first}` has {})",
                    line_no + 1,
                    fields.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// The text with comments removed and every string literal's contents
/// blanked (so `"input.x"` in a message is not a reference); line breaks
/// are kept, so line numbers stay right.
fn without_comments_and_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                out.push('"');
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        '\n' => out.push('\n'),
                        _ => {}
                    }
                }
                out.push('"');
            }
            '`' => {
                out.push('"');
                for c in chars.by_ref() {
                    match c {
                        '`' => break,
                        '\n' => out.push('\n'),
                        _ => {}
                    }
                }
                out.push('"');
            }
            c => out.push(c),
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first position of `word` standing alone (not part of a longer name
/// or a field, like `x.input`).
fn find_word(hay: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = hay[from..].find(word).map(|i| i + from) {
        let before = hay[..i].chars().next_back();
        let after = hay[i + word.len()..].chars().next();
        if !before.is_some_and(|c| is_ident(c) || c == '.') && !after.is_some_and(is_ident) {
            return Some(i);
        }
        from = i + word.len();
    }
    None
}

/// The names of a reference's first two steps: `.a.b`, `["a"].b`, `.a["b"]`.
/// Blanked strings read as `""`, which names nothing and is skipped.
fn path_after(mut rest: &str) -> Vec<String> {
    let mut path = Vec::new();
    while path.len() < 2 {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(|c: char| !is_ident(c)).unwrap_or(r.len());
            if end == 0 {
                break;
            }
            path.push(r[..end].to_string());
            rest = &r[end..];
        } else {
            break;
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_inputs_pass_and_unknown_ones_are_named_with_their_line() {
        let ok = "package dispatch\ndeny contains \"input.nope is fine in a string\" if {\n  input.parcel.name == \"x\" # input.nope in a comment\n  input.arguments.amount > 20\n  some k in object.keys(input.labels)\n}\n";
        assert_eq!(check_inputs(ok), Ok(()));
        let typo = "package dispatch\n\ndeny contains \"x\" if input.parcle.name == \"x\"\n";
        let e = check_inputs(typo).expect_err("an error");
        assert!(e.starts_with("line 3: `input.parcle`"), "{e}");
        let field = "package dispatch\ndeny contains \"x\" if input.parcel.nmae == \"x\"\n";
        let e = check_inputs(field).expect_err("an error");
        assert!(
            e.contains("`input.parcel.nmae`") && e.contains("name, digest"),
            "{e}"
        );
        // Deeper paths of free-form inputs are the policy's business.
        assert_eq!(check_inputs("x if input.payload.a.b.c\n"), Ok(()));
        assert_eq!(check_inputs("myinput.zzz\nx.input.zzz\n"), Ok(()));
    }
}
