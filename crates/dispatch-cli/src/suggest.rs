//! "did you mean": a tip for a mistyped subcommand that clap's own
//! suggestions miss or get wrong.
//!
//! clap suggests by Jaro similarity, which misses short words with two
//! letters swapped (`rnu` for `run`) or offers a far one (`inspect-run` for
//! `sp`). This offers first the subcommands (names and aliases) within one edit —
//! an insertion, deletion, substitution or swap of neighbours — of the typo.

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// Makes the `tip: a similar subcommand exists` of `e` the subcommands one
/// edit away when there are some; else leaves clap's own tip, if any.
pub fn add_subcommand_tip(e: &mut clap::Error, root: &clap::Command, args: &[String]) {
    if e.kind() != ErrorKind::InvalidSubcommand {
        return;
    }
    let Some(ContextValue::String(typo)) = e.get(ContextKind::InvalidSubcommand) else {
        return;
    };
    let typo = typo.clone();
    let Some(parent) = parent_of(root, args, &typo) else {
        return;
    };
    let mut near: Vec<String> = parent
        .get_subcommands()
        .flat_map(|c| std::iter::once(c.get_name()).chain(c.get_all_aliases()))
        .filter(|name| edit_distance(name, &typo) <= 1)
        .map(str::to_string)
        .collect();
    near.sort();
    near.dedup();
    if !near.is_empty() {
        e.insert(
            ContextKind::SuggestedSubcommand,
            ContextValue::Strings(near),
        );
    }
}

/// The command whose subcommand `typo` was meant to be: follow the
/// subcommands named in `args` until `typo`.
fn parent_of<'a>(
    root: &'a clap::Command,
    args: &[String],
    typo: &str,
) -> Option<&'a clap::Command> {
    let mut current = root;
    for arg in args.iter().skip(1) {
        if arg == typo {
            return Some(current);
        }
        if let Some(sub) = current.find_subcommand(arg) {
            current = sub;
        }
    }
    None
}

/// Optimal string alignment distance: insertions, deletions,
/// substitutions and swaps of neighbouring characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn a_swap_of_neighbours_is_one_edit() {
        assert_eq!(edit_distance("rnu", "run"), 1);
        assert_eq!(edit_distance("sp", "ps"), 1);
        assert_eq!(edit_distance("rn", "run"), 1);
        assert_eq!(edit_distance("xyz", "run"), 3);
    }
}
