//! The Agentfile directive registry: for every directive, its name, the
//! shape of its arguments, whether it may appear once, a one-line help and an
//! example, the function that parses it, and what upstream Dispatch means by
//! it. The entries are in [`super::directive_table`].
//!
//! Everything about directives is read from here: the parser looks the
//! directive up and calls its function (there is no other `match` on
//! directive names), the build errors quote its help and example, and the
//! reference page, the upstream-compatibility table and the shell
//! completions of `dispatch reference agentfile` are generated from it.

pub use super::directive_table::DIRECTIVES;
use super::handlers::Handler;

/// One Agentfile directive.
pub struct Directive {
    /// The name, upper case (names are case-insensitive in an Agentfile).
    pub name: &'static str,
    /// The shape of its arguments.
    pub args: Args,
    /// It may appear at most once.
    pub once: bool,
    /// What it expects, for help and errors ("KEY expects …").
    pub expects: &'static str,
    /// An example line.
    pub example: &'static str,
    /// How its line is read.
    pub(super) parse: Parse,
    /// What upstream Dispatch's Agentfile means by it.
    pub upstream: Upstream,
}

/// The shape of a directive's arguments, checked before its function runs
/// (a line of another shape gets "KEY expects …, got `…` (hint: `example`)").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Args {
    /// The rest of the line as text, with one pair of surrounding quotes
    /// removed; never split (`PROMPT`, `COMMAND`, `SCHEDULE`, …).
    Text,
    /// Arguments split on whitespace, `"…"` and `'…'` grouping words; at
    /// least `min`, at most `max` (`None`: no limit).
    Words { min: usize, max: Option<usize> },
}

impl Args {
    /// The shape as a grammar: `text`, `1 argument`, `1-2 arguments`, `2+ arguments`.
    pub fn describe(&self) -> String {
        match *self {
            Args::Text => "text".into(),
            Args::Words {
                min,
                max: Some(max),
            } if min == max => {
                format!("{min} argument{}", if min == 1 { "" } else { "s" })
            }
            Args::Words {
                min,
                max: Some(max),
            } => format!("{min}-{max} arguments"),
            Args::Words { min, max: None } => format!("{min}+ arguments"),
        }
    }

    /// Whether `n` arguments fit.
    pub fn fits(&self, n: usize) -> bool {
        match *self {
            Args::Text => true,
            Args::Words { min, max } => n >= min && max.is_none_or(|max| n <= max),
        }
    }
}

/// How a directive's line is read.
pub(super) enum Parse {
    /// By this function.
    With(Handler),
    /// Never: an upstream directive Dispatch cannot honour, refused at build
    /// with this reason.
    Refused(&'static str),
}

/// What upstream Dispatch means by a directive (`docs/agentfile-compat.md`).
pub enum Upstream {
    /// Not an upstream directive: ours only.
    Ours,
    /// Upstream's directive, meaning what it means here.
    AsOurs,
    /// Upstream's directive: its forms, what each means upstream, and how
    /// Dispatch honours it.
    Forms(&'static [Form]),
}

/// One row of the upstream-compatibility table.
pub struct Form {
    /// The form, as Markdown (`` `MOUNT MEMORY none` ``).
    pub form: &'static str,
    /// What upstream means by it.
    pub upstream: &'static str,
    /// What Dispatch does with it.
    pub here: &'static str,
}

impl Directive {
    /// The reason it is refused, for a directive Dispatch cannot honour.
    pub fn refused(&self) -> Option<&'static str> {
        match self.parse {
            Parse::Refused(why) => Some(why),
            Parse::With(_) => None,
        }
    }

    /// "KEY expects WHAT (hint: `EXAMPLE`)".
    pub fn usage(&self) -> String {
        format!(
            "{} expects {} (hint: `{}`)",
            self.name, self.expects, self.example
        )
    }

    /// The help `dispatch reference agentfile NAME` prints.
    pub fn help(&self) -> String {
        let mut out = format!(
            "{}: {}\n  arguments: {}{}\n  example:   {}\n",
            self.name,
            self.expects,
            self.args.describe(),
            if self.once { ", at most once" } else { "" },
            self.example
        );
        if let Some(why) = self.refused() {
            out.push_str(&format!("  refused:   {why}\n"));
        }
        match &self.upstream {
            Upstream::Ours => out.push_str("  upstream:  not an upstream Dispatch directive\n"),
            Upstream::AsOurs => out.push_str("  upstream:  the same\n"),
            Upstream::Forms(forms) => {
                for f in *forms {
                    out.push_str(&format!(
                        "  upstream:  {}: {}\n             here: {}\n",
                        f.form.replace('`', ""),
                        f.upstream,
                        f.here
                    ));
                }
            }
        }
        out
    }
}

/// The directive named `word` (any case).
pub fn find(word: &str) -> Option<&'static Directive> {
    DIRECTIVES
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(word))
}

/// Dockerfile words that mean another directive here (the error names it).
pub const ALIASES: &[(&str, &str)] = &[
    ("CMD", "COMMAND"),
    ("RUN", "COMMAND"),
    ("ARG", "ENV"),
    ("EXPOSE", "LISTEN"),
];

#[cfg(test)]
mod tests {
    use super::super::{lex::split_args, parse};
    use super::*;

    #[test]
    fn names_are_upper_case_and_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for d in DIRECTIVES {
            assert_eq!(d.name, d.name.to_ascii_uppercase());
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(find(&d.name.to_ascii_lowercase()).is_some_and(|f| f.name == d.name));
        }
        for (word, to) in ALIASES {
            assert!(find(word).is_none(), "{word} is an alias, not a directive");
            assert!(find(to).is_some(), "{word} points to {to}");
        }
    }

    /// Each entry's example is a line of its directive, of its shape.
    #[test]
    fn every_example_has_its_directive_and_its_shape() {
        for d in DIRECTIVES {
            let (word, rest) = d.example.split_once(' ').expect("an argument");
            assert_eq!(word, d.name, "{}", d.example);
            let args = split_args(rest).expect("splits");
            assert!(d.args.fits(args.len()), "{}: {:?}", d.example, d.args);
        }
    }

    /// A line of the wrong shape is refused with the entry's help, before its
    /// parser function runs; an empty one with its usage.
    #[test]
    fn the_shape_and_the_help_come_from_the_entry() {
        let e = parse("NAME a b\n").expect_err("two names");
        assert_eq!(
            e.message,
            "NAME expects a name, got `a b` (hint: `NAME my-agent`)"
        );
        let e = parse("REQUIRES DB\n").expect_err("no URL");
        let d = find("REQUIRES").expect("REQUIRES");
        assert!(e.message.contains(d.expects) && e.message.contains(d.example));
        for d in DIRECTIVES.iter().filter(|d| d.refused().is_none()) {
            let e = parse(&format!("NAME a\n{}\n", d.name)).expect_err(d.name);
            assert_eq!((e.line, e.message), (2, d.usage()));
        }
    }

    #[test]
    fn a_refused_directive_says_why_whatever_follows() {
        let test = find("TEST").expect("TEST");
        let why = test.refused().expect("refused");
        for line in ["TEST", "TEST tool:lookup", "test tool:a tool:b"] {
            let e = parse(&format!("NAME a\n{line}\n")).expect_err(line);
            assert_eq!(e.message, why);
        }
    }

    #[test]
    fn the_help_names_shape_upstream_and_example() {
        let help = find("mount").expect("MOUNT").help();
        assert!(help.starts_with("MOUNT: "), "{help}");
        assert!(help.contains("arguments: 2 arguments"), "{help}");
        assert!(help.contains("MOUNT MEMORY pgvector"), "{help}");
        let help = find("RETRY").expect("RETRY").help();
        assert!(help.contains("1-3 arguments, at most once"), "{help}");
        assert!(
            help.contains("not an upstream Dispatch directive"),
            "{help}"
        );
    }
}
