use serde_json::json;

use super::*;
use crate::agentfile::parse;

fn wf(text: &str) -> Workflow {
    let af = parse(text).expect("parses");
    af.manifest.workflow.expect("a workflow")
}

fn err(text: &str) -> (usize, String) {
    let e = parse(text).expect_err("refused");
    (e.line, e.message)
}

const NEWSROOM: &str = "FROM workflow
NAME newsroom
AGENT researcher ./researcher
AGENT analyst ./analyst
AGENT writer ./writer
COORDINATOR workflow
ROUTE researcher -> analyst, writer
ROUTE analyst -> writer
ROUTE writer -> __end__
ROUTE analyst -> writer ON ERROR
LIMIT HOPS 20
LIMIT COST 2.00
TIMEOUT AGENT 5m
";

#[test]
fn the_newsroom_parses_with_its_routes_limits_and_timeout() {
    let w = wf(NEWSROOM);
    assert_eq!(w.coordinator, Coordinator::Workflow);
    assert_eq!(w.members.len(), 3);
    assert_eq!(w.members[0].parcel, "./researcher");
    assert_eq!(w.routes[0].to, vec!["analyst", "writer"]);
    assert!(w.routes[3].on_error);
    assert_eq!(w.max_hops, Some(20));
    assert_eq!(w.agent_timeout_ms, Some(300_000));
    assert_eq!(w.entry(), Some("researcher"));
    assert_eq!(
        w.default_targets("researcher", false),
        vec!["analyst", "writer"]
    );
    assert_eq!(w.default_targets("analyst", true), vec!["writer"]);
    assert_eq!(w.default_targets("writer", false), vec![END]);
    let af = parse(NEWSROOM).expect("parses");
    assert_eq!(af.manifest.limits.max_cost_usd, Some(2.0));
}

#[test]
fn chain_and_fan_out_follow_agents_order() {
    let w = wf(
        "FROM workflow\nNAME c\nAGENT a x\nAGENT b y\nAGENT c z\nCOORDINATOR chain\nAGENTS c, a b\n",
    );
    assert_eq!(w.sequence(), vec!["c", "a", "b"]);
    assert_eq!(w.default_targets("c", false), vec!["a"]);
    assert_eq!(w.default_targets("b", false), vec![END]);
    assert_eq!(w.resolve("a", PREV).expect("prev"), "c");
    assert_eq!(w.resolve("a", SELF).expect("self"), "a");
    assert!(w.resolve("c", PREV).is_err());
    assert!(
        w.resolve("a", "nobody")
            .expect_err("unknown")
            .contains("unknown receiver")
    );
    let f = wf(
        "FROM workflow\nNAME t\nAGENT es x\nAGENT fr y\nCOORDINATOR fan_out\nAGGREGATE vote\nTIMEOUT AGENT 30s\n",
    );
    assert_eq!(f.aggregate, Aggregate::Vote);
    assert!(f.default_targets("es", false).is_empty());
}

#[test]
fn graph_errors_name_their_line() {
    let unknown = "FROM workflow\nNAME n\nAGENT a x\nROUTE a -> b\n";
    let (line, m) = err(unknown);
    assert_eq!(line, 4, "{m}");
    assert!(m.contains("`b`, which is not an AGENT"), "{m}");

    let no_end = "FROM workflow\nNAME n\nAGENT a x\nAGENT b y\nROUTE a -> b\n";
    let (line, m) = err(no_end);
    assert_eq!(line, 3, "{m}");
    assert!(m.contains("no path to __end__"), "{m}");

    let unreachable =
        "FROM workflow\nNAME n\nAGENT a x\nAGENT b y\nROUTE a -> __end__\nROUTE b -> __end__\n";
    let (line, m) = err(unreachable);
    assert_eq!(line, 4, "{m}");
    assert!(m.contains("`b` is unreachable"), "{m}");

    let cycle =
        "FROM workflow\nNAME n\nAGENT a x\nAGENT b y\nROUTE a -> b\nROUTE b -> a, __end__\n";
    let (line, m) = err(cycle);
    assert_eq!(line, 3, "{m}");
    assert!(m.contains("cycle") && m.contains("LIMIT HOPS"), "{m}");
    wf(&format!("{cycle}LIMIT HOPS 5\n"));

    let self_loop = "FROM workflow\nNAME n\nAGENT a x\nROUTE a -> __self__, __end__\n";
    assert!(err(self_loop).1.contains("cycle"));

    let (line, m) = err("FROM workflow\nNAME n\nAGENT a x\nAGENT a y\n");
    assert_eq!(line, 4);
    assert!(m.contains("already declared on line 3"), "{m}");

    let (line, m) = err("FROM workflow\nNAME n\nAGENT a x\nCOORDINATOR chain\nAGENTS a b\n");
    assert_eq!(line, 5);
    assert!(m.contains("`b`"), "{m}");

    let (line, m) = err("FROM process\nNAME n\nCOMMAND true\nAGENT a x\n");
    assert_eq!(line, 4);
    assert!(m.contains("is for workflows"), "{m}");

    let (line, m) = err("FROM workflow\nNAME n\nAGENT a x\nROUTE a -> __end__\nCOORDINATOR star\n");
    assert_eq!(line, 5);
    assert!(m.contains("unknown coordinator"), "{m}");

    let (line, m) = err("FROM workflow\nNAME n\nAGENT a x\nROUTE a __end__\n");
    assert_eq!(line, 4);
    assert!(m.contains("from -> to"), "{m}");

    let (line, m) = err("FROM workflow\nNAME n\nAGENT __end__ x\n");
    assert_eq!(line, 3);
    assert!(m.contains("reserved"), "{m}");

    let (_, m) = err("FROM workflow\nNAME n\n");
    assert!(m.contains("needs members"), "{m}");

    let (line, m) = err("FROM workflow\nNAME n\nAGENT a x\nROUTE a -> __end__\nAGGREGATE vote\n");
    assert_eq!(line, 5);
    assert!(m.contains("fan_out"), "{m}");
}

#[test]
fn aggregates_merge_pick_the_first_and_vote() {
    let r = vec![
        ("es".to_string(), json!("hola")),
        ("fr".to_string(), json!("salut")),
        ("de".to_string(), json!("salut")),
    ];
    assert_eq!(
        aggregate(Aggregate::MergeAll, &r),
        json!({"es": "hola", "fr": "salut", "de": "salut"})
    );
    assert_eq!(aggregate(Aggregate::First, &r), json!("hola"));
    assert_eq!(aggregate(Aggregate::Vote, &r), json!("salut"));
    assert_eq!(aggregate(Aggregate::Vote, &[]), serde_json::Value::Null);
}
