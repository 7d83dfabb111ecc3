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
