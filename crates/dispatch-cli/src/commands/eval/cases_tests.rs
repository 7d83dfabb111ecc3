//! Unit tests of case parsing.
use super::parse;

#[test]
fn an_unknown_expectation_names_the_key_the_case_and_the_line() {
    let text = "[[case]]\nname = \"a\"\n\n[[case]]\nname = \"b\"\nexpect.staus = \"succeeded\"\n";
    let e = parse(text, "f.toml").expect_err("refused");
    assert!(e.message.starts_with("f.toml:6:"), "{}", e.message);
    assert!(e.message.contains("staus"), "{}", e.message);
    assert!(e.message.contains("case \"b\""), "{}", e.message);
}

#[test]
fn a_bad_json_path_is_refused_before_anything_runs() {
    let text = "[[case]]\nname = \"a\"\nexpect.output = { path = \"$[\", equals = 1 }\n";
    let e = parse(text, "f.toml").expect_err("refused");
    assert!(e.message.contains("is not a JSON path"), "{}", e.message);
    assert!(e.message.starts_with("f.toml:3:"), "{}", e.message);
}

#[test]
fn outputs_may_be_one_table_or_a_list() {
    let text = "[[case]]\nname = \"a\"\npayload = { x = 1 }\nexpect.output = [{ path = \"$.a\", equals = 1 }, { regex = \"x\" }]\n";
    let cases = parse(text, "f.toml").expect("parses");
    assert_eq!(cases[0].expect.output.len(), 2);
    assert_eq!(cases[0].payload["x"], 1);
}

#[test]
fn a_case_expects_a_succeeded_run_unless_it_says_otherwise() {
    let text = "[[case]]\nname = \"a\"\n\n[[case]]\nname = \"b\"\nexpect.status = \"failed\"\nexpect.exit_code = 3\n";
    let cases = parse(text, "f.toml").expect("parses");
    assert_eq!(cases[0].expect.status, "succeeded");
    assert_eq!(cases[1].expect.status, "failed");
}

#[test]
fn a_non_zero_exit_code_with_a_succeeded_status_is_refused() {
    for text in [
        "[[case]]\nname = \"a\"\nexpect.exit_code = 2\n",
        "[[case]]\nname = \"a\"\nexpect.status = \"succeeded\"\nexpect.exit_code = 2\n",
    ] {
        let e = parse(text, "f.toml").expect_err("refused");
        assert!(e.message.contains("case \"a\""), "{}", e.message);
        assert!(e.message.contains("expect.exit_code 2"), "{}", e.message);
        assert!(
            e.message.contains("expect.status = \"failed\""),
            "{}",
            e.message
        );
    }
    // Exit code 0 goes with the default.
    parse("[[case]]\nname = \"a\"\nexpect.exit_code = 0\n", "f.toml").expect("parses");
}

fn manifest(agentfile: &str) -> dispatch_core::parcel::Manifest {
    dispatch_core::agentfile::parse(agentfile)
        .expect("an Agentfile")
        .manifest
}

#[test]
fn tools_are_checked_only_when_the_agent_declares_all_it_can_call() {
    let cases = parse(
        "[[case]]\nname = \"a\"\nexpect.tools = { not_called = [\"read_file\"] }\n",
        "f.toml",
    )
    .expect("parses");
    let native = "FROM agent\nNAME n\nMODEL gpt-m\nTOOL MCP files COMMAND \"srv\" ALLOW read_file,list_directory\n";
    super::check_declared_tools(&cases, "f.toml", &manifest(native)).expect("an allowed MCP tool");
    let other = "FROM agent\nNAME n\nMODEL gpt-m\nTOOL BUILTIN memory_get\n";
    let e = super::check_declared_tools(&cases, "f.toml", &manifest(other)).expect_err("refused");
    assert!(e.message.contains("its tools: memory_get"), "{}", e.message);
    // An MCP server without ALLOW offers tools of its own naming; a
    // process agent reports its own calls: neither is checked.
    let open = "FROM agent\nNAME n\nMODEL gpt-m\nTOOL MCP files COMMAND \"srv\"\n";
    super::check_declared_tools(&cases, "f.toml", &manifest(open)).expect("not known");
    let process = "FROM process\nNAME p\nCOMMAND true\n";
    super::check_declared_tools(&cases, "f.toml", &manifest(process)).expect("not known");
}
