//! A shell-form COMMAND (`["/bin/sh", "-c", "<line>"]`) whose line the shell
//! would only split into words is run without the shell: the same program
//! with the same arguments, one `fork` + `exec` (and the shell's own start)
//! less before the agent executes. Anything the shell would interpret
//! (quotes, variables, globs, redirections, operators, a leading
//! assignment, a builtin or keyword) keeps the shell.

/// The words to execute directly instead of `command`, when the shell
/// would execute exactly them.
pub(crate) fn direct_words(command: &[String]) -> Option<Vec<String>> {
    let [sh, c, line] = command else {
        return None;
    };
    if sh != "/bin/sh" || c != "-c" {
        return None;
    }
    let words: Vec<String> = line
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let (first, rest) = words.split_first()?;
    let plain = |w: &str, allow_eq: bool| {
        w.chars().all(|ch| {
            ch.is_ascii_alphanumeric()
                || matches!(ch, '_' | '-' | '.' | '/' | ',' | ':' | '@' | '%' | '+')
                || (allow_eq && ch == '=')
        })
    };
    // `NAME=value cmd` is an assignment: only later words may hold `=`.
    let simple = plain(first, false)
        && rest.iter().all(|w| plain(w, true))
        && !SHELL_WORDS.contains(&first.as_str());
    simple.then_some(words)
}

/// Keywords and builtins of a POSIX shell (dash): the shell runs these
/// itself, so a line starting with one keeps it.
const SHELL_WORDS: &[&str] = &[
    ".", ":", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done", "echo",
    "elif", "else", "esac", "eval", "exec", "exit", "export", "false", "fg", "fi", "for",
    "getopts", "hash", "if", "in", "jobs", "kill", "local", "printf", "pwd", "read", "readonly",
    "return", "set", "shift", "test", "then", "times", "trap", "true", "type", "ulimit", "umask",
    "unalias", "unset", "until", "wait", "while",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(line: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), line.into()]
    }

    #[test]
    fn a_plain_line_runs_its_words() {
        assert_eq!(
            direct_words(&sh("sh agent.sh")),
            Some(vec!["sh".into(), "agent.sh".into()])
        );
        assert_eq!(
            direct_words(&sh("  python3 -u agent.py  --model=gpt-4o\t--n 3 ")),
            Some(
                ["python3", "-u", "agent.py", "--model=gpt-4o", "--n", "3"]
                    .map(String::from)
                    .to_vec()
            )
        );
        assert_eq!(
            direct_words(&sh("./bin/agent")),
            Some(vec!["./bin/agent".into()])
        );
    }

    #[test]
    fn what_the_shell_interprets_keeps_the_shell() {
        for line in [
            "",
            "   ",
            "echo $HOME",
            "python agent.py > out.txt",
            "a && b",
            "a; b",
            "a | b",
            "sh 'my agent.sh'",
            "sh \"agent.sh\"",
            "ls *.py",
            "cat ~/x",
            "FOO=bar agent",
            "cd /tmp",
            "exec agent",
            "echo hi",
            "agent \\x",
            "agent `id`",
            "agent # note",
            "agent &",
            "(agent)",
            "agent\nother",
            "ägent",
        ] {
            assert_eq!(direct_words(&sh(line)), None, "{line:?}");
        }
    }

    #[test]
    fn exec_form_is_left_alone() {
        let exec = vec!["python3".to_string(), "agent.py".to_string()];
        assert_eq!(direct_words(&exec), None);
        let other_shell = vec!["/bin/bash".into(), "-c".into(), "agent".into()];
        assert_eq!(direct_words(&other_shell), None);
    }
}
