//! `EVAL <file>…`: test cases for `dispatch eval`. Each file is copied into
//! the parcel under [`EVAL_DIR`] (so the digest covers the cases) and its
//! parcel path recorded in [`crate::parcel::Manifest::evals`]. Upstream
//! Dispatch's `EVAL <file> REQUIRED` is accepted: every EVAL file is
//! required here (`dispatch eval` fails when any case fails).

use super::CopySpec;
use super::lex::norm_rel;

/// Where EVAL files go inside the parcel's `files/` (apart from COPY's
/// destinations, so that `COPY . .` never writes the same file twice).
pub const EVAL_DIR: &str = ".eval";

/// Parses the files of one `EVAL` line into copies and their parcel paths.
pub(super) fn parse_eval(args: &[String], line: usize) -> Result<Vec<(CopySpec, String)>, String> {
    let files = match args {
        [files @ .., last] if last == "REQUIRED" && !files.is_empty() => files,
        _ => args,
    };
    files
        .iter()
        .map(|raw| {
            let src = norm_rel(raw).map_err(|p| {
                format!("EVAL file `{raw}` {p} (hint: name a case file inside the directory that holds the Agentfile, e.g. `EVAL evals/smoke.toml`)")
            })?;
            if src.is_empty() {
                return Err(format!(
                    "EVAL expects a case file, got `{raw}` (hint: `EVAL evals/smoke.toml`)"
                ));
            }
            let dest = format!("{EVAL_DIR}/{src}");
            let copy = CopySpec {
                src,
                dest: dest.clone(),
                dest_is_dir: false,
                line,
            };
            Ok((copy, dest))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::agentfile::parse;

    #[test]
    fn eval_files_are_copied_under_the_eval_dir() {
        let af = parse("FROM process\nNAME a\nCOMMAND true\nEVAL evals/smoke.toml ./more.toml\n")
            .expect("parses");
        assert_eq!(
            af.manifest.evals,
            vec![".eval/evals/smoke.toml", ".eval/more.toml"]
        );
        assert_eq!(af.copies.len(), 2);
        assert_eq!(af.copies[0].src, "evals/smoke.toml");
    }

    #[test]
    fn upstream_required_marks_nothing_more_than_an_eval() {
        let af = parse("FROM process\nNAME a\nCOMMAND true\nEVAL evals/safety.eval REQUIRED\n")
            .expect("parses");
        assert_eq!(af.manifest.evals, vec![".eval/evals/safety.eval"]);
    }

    #[test]
    fn an_eval_outside_the_context_is_refused_with_its_line() {
        let e = parse("FROM process\nNAME a\nCOMMAND true\nEVAL ../x.toml\n").expect_err("refused");
        assert_eq!(e.line, 4);
        assert!(e.to_string().contains("EVAL file `../x.toml`"), "{e}");
    }
}
