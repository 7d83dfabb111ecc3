//! Projects: every run (and so its approvals, events, logs and services)
//! belongs to one; tokens are bound to projects with a role. A project is
//! only a name: it exists as soon as a run or a token names it.

/// The project of a run that names none, and of every run made before
/// projects existed.
pub const DEFAULT_PROJECT: &str = "default";

/// The longest project name.
pub const MAX_PROJECT_LEN: usize = 63;

/// Checks a project name: 1 to 63 lowercase letters, digits, `-` and `_`,
/// starting with a letter or a digit. The error is one line with a hint.
pub fn check_project(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PROJECT_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    match ok {
        true => Ok(()),
        false => Err(format!(
            "`{name}` is not a project name (hint: 1 to {MAX_PROJECT_LEN} lowercase letters, digits, `-` and `_`, starting with a letter or digit, e.g. `payments`)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::check_project;

    #[test]
    fn project_names_are_short_lowercase_words() {
        for good in [
            "default",
            "payments",
            "team-a",
            "a_b",
            "0x",
            &"a".repeat(63),
        ] {
            assert_eq!(check_project(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Payments",
            "-a",
            "_a",
            "a b",
            "a/b",
            "é",
            &"a".repeat(64),
        ] {
            let err = check_project(bad).expect_err(bad);
            assert!(err.contains("is not a project name"), "{err}");
        }
    }
}
