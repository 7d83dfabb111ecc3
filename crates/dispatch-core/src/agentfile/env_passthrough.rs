//! `ENV_PASSTHROUGH NAME…`: variables of the environment the run starts in
//! that the agent and its tools get, by name. Agents start from an empty
//! environment plus an allowlist (see `docs/isolation.md`); a parcel asks
//! for more here. The names are part of the manifest, so the digest covers
//! them.

use super::lex::env_name;

/// Adds the names in `args` to `names` (declaration order, no duplicates).
pub(super) fn parse(args: &[String], names: &mut Vec<String>) -> Result<(), String> {
    for a in args {
        if a.contains('=') {
            return Err(format!(
                "ENV_PASSTHROUGH takes only names, got `{a}` (hint: a fixed value goes in `ENV {a}`)"
            ));
        }
        let name = env_name(a, "ENV_PASSTHROUGH variable")?;
        if name.starts_with("DISPATCH_") {
            return Err(format!(
                "ENV_PASSTHROUGH {name}: DISPATCH_* variables are the runtime's own (hint: the agent gets the protocol variables it needs without asking)"
            ));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_are_kept_once_in_order() {
        let mut names = Vec::new();
        parse(
            &args(&["HTTPS_PROXY", "NO_PROXY", "HTTPS_PROXY"]),
            &mut names,
        )
        .expect("valid");
        assert_eq!(names, ["HTTPS_PROXY", "NO_PROXY"]);
    }

    #[test]
    fn values_bad_names_and_protocol_variables_are_refused() {
        let mut names = Vec::new();
        let e = parse(&args(&["A=1"]), &mut names).expect_err("a value");
        assert!(e.contains("only names"), "{e}");
        let e = parse(&args(&["1A"]), &mut names).expect_err("a bad name");
        assert!(e.contains("not a valid"), "{e}");
        let e = parse(&args(&["DISPATCH_ROOT"]), &mut names).expect_err("the runtime's");
        assert!(e.contains("runtime's own"), "{e}");
    }
}
