//! Multi-agent runs: workflow parcels whose members run as child runs,
//! exchanging messages the coordinator keeps in the store.

use crate::common;

use std::path::{Path, PathBuf};

use common::{Dispatch, eventually};
use serde_json::{Value, json};

/// A member directory `<flow>/<name>` running `script` (POSIX sh).
fn member(flow: &Path, name: &str, script: &str, extra: &str) {
    common::checks::agent(flow, name, "FROM process\n", script, extra);
}

/// Writes the workflow's Agentfile in `<d>/<flow>/`.
fn workflow(d: &Dispatch, flow: &str, agentfile: &str) -> PathBuf {
    let dir = d.dir.path().join(flow);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("Agentfile"), agentfile).expect("write Agentfile");
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The children of `id`, oldest first.
fn children(d: &Dispatch, id: &str) -> Vec<Value> {
    let out = d.ok(&["ps", "--parent", id, "-a", "--format", "json"]);
    let mut v: Vec<Value> = serde_json::from_str(&out).expect("ps prints JSON");
    v.reverse();
    v
}

/// Appends `{"path": <previous path>/<name>}` as the output.
fn appender(name: &str) -> String {
    format!(
        "p=$(sed -n 's/^{{\"from\":\"[^\"]*\",\"kind\":\"[^\"]*\",\"payload\":{{\"path\":\"\\([^\"]*\\)\".*/\\1/p')\n\
         printf '{{\"type\":\"output\",\"value\":{{\"path\":\"%s/{name}\"}}}}\\n' \"$p\" >> \"$DISPATCH_EVENTS\"\n"
    )
}

#[test]
fn a_chain_of_four_passes_each_output_to_the_next_in_order() {
    let d = Dispatch::new();
    let flow = d.dir.path().join("chain");
    for n in ["a", "b", "c", "d"] {
        member(&flow, n, &appender(n), "");
    }
    workflow(
        &d,
        "chain",
        "FROM workflow\nNAME chain\nAGENT a ./a\nAGENT b ./b\nAGENT c ./c\nAGENT d ./d\nCOORDINATOR chain\nAGENTS a c b d\n",
    );
    let id = d.detach(&flow, r#"{"path":""}"#);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], json!({"path": "/a/c/b/d"}));
    let kids = children(&d, &id);
    let names: Vec<&str> = kids
        .iter()
        .map(|k| k["parcel_name"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(names, ["a", "c", "b", "d"]);
    // Members are started by the workflow, and `ps` finds them so.
    assert!(kids.iter().all(|k| k["trigger"] == "workflow"), "{kids:?}");
    let by_trigger = d.ok(&["ps", "-a", "-q", "--filter", "trigger=workflow"]);
    assert_eq!(by_trigger.lines().count(), 4, "{by_trigger}");
    let msgs = doc["workflow"]["messages"].as_array().expect("messages");
    let hops: Vec<(String, String)> = msgs
        .iter()
        .map(|m| {
            (
                m["from"].as_str().expect("from").into(),
                m["to"].as_str().expect("to").into(),
            )
        })
        .collect();
    let want = [
        ("__start__", "a"),
        ("a", "c"),
        ("c", "b"),
        ("b", "d"),
        ("d", "__end__"),
    ];
    assert_eq!(hops, want.map(|(a, b)| (a.to_string(), b.to_string())));
}

#[test]
fn a_fan_out_aggregates_its_members_and_honors_the_agent_timeout() {
    let d = Dispatch::new();
    let flow = d.dir.path().join("fan");
    let say = |w: &str| {
        format!(
            "cat > /dev/null\nprintf '{{\"type\":\"output\",\"value\":\"{w}\"}}\\n' >> \"$DISPATCH_EVENTS\"\n"
        )
    };
    member(&flow, "x", &say("yes"), "");
    member(&flow, "y", &say("no"), "");
    member(&flow, "slow", "sleep 30\n", "");
    let text = "FROM workflow\nNAME fan\nAGENT x ./x\nAGENT y ./y\nAGENT slow ./slow\nCOORDINATOR fan_out\nAGENTS x y slow\nAGGREGATE merge_all\nTIMEOUT AGENT 1s\n";
    workflow(&d, "fan", text);
    let id = d.detach(&flow, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], json!({"x": "yes", "y": "no"}));
    let kids = children(&d, &id);
    assert_eq!(kids.len(), 3);
    let slow = kids
        .iter()
        .find(|k| k["parcel_name"] == "slow")
        .expect("slow ran");
    assert_eq!(slow["status"], "timed_out", "{slow}");

    // vote: the most common output.
    member(&flow, "z", &say("no"), "");
    let text = "FROM workflow\nNAME fan\nAGENT x ./x\nAGENT y ./y\nAGENT z ./z\nCOORDINATOR fan_out\nAGGREGATE vote\n";
    workflow(&d, "fan", text);
    let id = d.detach(&flow, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["output"], json!("no"), "{doc}");
    // Members created in one millisecond share their first 12 digits: `ps`
    // shows each id long enough to tell it apart, and each works as an id.
    let table = d.ok(&["ps", "--parent", &id, "-a"]);
    let shown: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(shown.len(), 3, "{table}");
    let distinct: std::collections::HashSet<&&str> = shown.iter().collect();
    assert_eq!(distinct.len(), 3, "{table}");
    for short in shown {
        let kid = d.inspect(short);
        assert!(kid["id"].as_str().is_some_and(|k| k.starts_with(short)));
        assert_eq!(kid["parent_id"].as_str(), Some(id.as_str()), "{kid}");
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn the_newsroom_loops_back_to_the_analyst_once_and_ends_at_end() {
    let d = Dispatch::new();
    let out = d.run(&[
        "run",
        path(&examples().join("newsroom")),
        "--job",
        r#"{"topic":"tides"}"#,
    ]);
    let stderr =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("message writer → analyst VALIDATION"),
        "the foreground shows messages as they pass: {stderr}"
    );
    assert!(stderr.contains("writer starts as run"), "{stderr}");
    let id = d.ok(&["ps", "-a", "-q", "--filter", "parcel=newsroom"]);
    let doc = d.inspect(&id);
    assert_eq!(doc["output"]["headline"], "Why tides turn", "{doc}");
    let agents: Vec<&str> = doc["workflow"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["to"].as_str().unwrap_or("?"))
        .collect();
    // The writer is a JOIN: the researcher's and the analyst's messages are
    // held, then delivered together as one (from __join__); after the loop
    // back, the analyst's alone (the researcher is not running).
    let msgs = doc["workflow"]["messages"].as_array().expect("messages");
    let delivered: Vec<(&str, &str)> = msgs
        .iter()
        .filter(|m| !m["child_run"].is_null())
        .map(|m| {
            (
                m["from"].as_str().unwrap_or("?"),
                m["to"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        delivered,
        [
            ("__start__", "researcher"),
            ("researcher", "analyst"),
            ("__join__", "writer"),
            ("writer", "analyst"),
            ("__join__", "writer"),
        ],
        "{msgs:?}"
    );
    assert_eq!(agents.last(), Some(&"__end__"));
    assert_eq!(
        agents.iter().filter(|a| **a == "writer").count(),
        5,
        "{agents:?}"
    );
    let writer_turns: Vec<Value> = children(&d, &id)
        .into_iter()
        .filter(|k| k["parcel_name"] == "newsroom-writer")
        .collect();
    assert_eq!(writer_turns.len(), 2);
    let first = d.inspect(writer_turns[0]["id"].as_str().expect("id"));
    let got = &first["payload"];
    assert_eq!(got["from"], "__join__", "{got}");
    assert_eq!(got["payload"]["researcher"]["topic"], "tides", "{got}");
    assert_eq!(got["payload"]["analyst"]["revised"], false, "{got}");
    assert_eq!(children(&d, &id).len(), 5);
    // Usage rolled up on the parent: 60 + 2 × 90 + 2 × 130 tokens.
    assert_eq!(
        doc["usage"]["input_tokens"].as_u64().unwrap_or(0)
            + doc["usage"]["output_tokens"].as_u64().unwrap_or(0),
        500,
        "{}",
        doc["usage"]
    );
    let human = d.ok(&["inspect-run", &id]);
    assert!(
        human.contains("usage by agent:") && human.contains("analyst          2 turn(s)"),
        "{human}"
    );

    // The graph, for Graphviz and Mermaid.
    let dot = d.ok(&["inspect-run", &id, "--graph", "dot"]);
    for want in [
        "digraph \"newsroom\" {",
        "\"writer\" -> \"analyst\" [label=\"VALIDATION ×1\"];",
        "\"analyst\" -> \"writer\" [label=\"RESULT ×2\"];",
        "\"writer\" -> \"__end__\" [label=\"RESULT ×1\"];",
        "\"researcher\" -> \"writer\" [label=\"RESULT ×1\"];",
        "\"analyst\" [shape=box, label=\"analyst\\n2 turns\"];",
    ] {
        assert!(dot.contains(want), "{want} in {dot}");
    }
    let mermaid = d.ok(&["inspect-run", &id, "--graph", "mermaid"]);
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    assert!(
        mermaid.contains("n3 -->|\"VALIDATION ×1\"| n2"),
        "{mermaid}"
    );
    // A run that is no workflow has no graph.
    let child = children(&d, &id)[0]["id"].as_str().expect("id").to_string();
    let err = d.fails(&["inspect-run", &child, "--graph", "dot"], 125);
    assert!(err.contains("is not a workflow run"), "{err}");
}

#[test]
fn a_self_loop_stops_at_the_hop_limit() {
    let d = Dispatch::new();
    let flow = d.dir.path().join("loop");
    member(
        &flow,
        "refine",
        "cat > /dev/null\necho '{\"type\":\"message\",\"to\":\"__self__\",\"kind\":\"TASK\",\"payload\":{}}' >> \"$DISPATCH_EVENTS\"\n",
        "",
    );
    workflow(
        &d,
        "loop",
        "FROM workflow\nNAME loop\nAGENT refine ./refine\nROUTE refine -> __self__, __end__\nLIMIT HOPS 3\n",
    );
    let id = d.detach(&flow, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(reason.starts_with("LIMIT HOPS 3 reached"), "{reason}");
    assert_eq!(children(&d, &id).len(), 3);
}

#[test]
fn the_workflow_budget_stops_the_fourth_member() {
    let d = Dispatch::new();
    let flow = d.dir.path().join("spend");
    let spend = "cat > /dev/null\necho '{\"type\":\"usage\",\"model\":\"m\",\"input_tokens\":60,\"output_tokens\":40}' >> \"$DISPATCH_EVENTS\"\n";
    for n in ["a", "b", "c", "d", "e"] {
        member(&flow, n, spend, "");
    }
    workflow(
        &d,
        "spend",
        "FROM workflow\nNAME spend\nAGENT a ./a\nAGENT b ./b\nAGENT c ./c\nAGENT d ./d\nAGENT e ./e\nCOORDINATOR chain\nLIMIT TOKENS 300\n",
    );
    let id = d.detach(&flow, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("budget_exceeded: 300 tokens used, limit 300; `d` was not started"),
        "{reason}"
    );
    assert_eq!(
        children(&d, &id).len(),
        3,
        "the fourth member never started"
    );
}

#[test]
fn a_failed_member_fails_the_workflow_unless_a_route_takes_its_error() {
    let d = Dispatch::new();
    let flow = d.dir.path().join("err");
    member(
        &flow,
        "bad",
        "cat > /dev/null\necho '{\"type\":\"error\",\"message\":\"no data\",\"retryable\":false}' >> \"$DISPATCH_EVENTS\"\nexit 3\n",
        "",
    );
    member(
        &flow,
        "fixer",
        "msg=$(cat)\ncase \"$msg\" in *'\"kind\":\"ERROR\"'*) echo '{\"type\":\"output\",\"value\":\"fixed\"}' >> \"$DISPATCH_EVENTS\";; esac\n",
        "",
    );
    workflow(
        &d,
        "err",
        "FROM workflow\nNAME err\nAGENT bad ./bad\nROUTE bad -> __end__\n",
    );
    let id = d.detach(&flow, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("agent `bad` failed: no data"),
        "{reason}"
    );

    workflow(
        &d,
        "err",
        "FROM workflow\nNAME err\nAGENT bad ./bad\nAGENT fixer ./fixer\nROUTE bad -> __end__\nROUTE bad -> fixer ON ERROR\nROUTE fixer -> __end__\n",
    );
    let id = d.detach(&flow, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], "fixed");
}

#[test]
fn stopping_the_workflow_stops_every_live_member() {
    let d = Dispatch::new();
    let flow = d.dir.path().join("stop");
    member(&flow, "sleeper", "sleep 60\n", "");
    workflow(
        &d,
        "stop",
        "FROM workflow\nNAME stop\nAGENT s1 ./sleeper\nAGENT s2 ./sleeper\nCOORDINATOR fan_out\n",
    );
    let id = d.detach(&flow, "{}");
    eventually(20, "both members running", || {
        let kids = children(&d, &id);
        kids.len() == 2 && kids.iter().all(|k| k["status"] == "running")
    });
    d.ok(&["stop", &id]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "cancelled", "{doc}");
    for k in children(&d, &id) {
        assert_eq!(k["status"], "cancelled", "{k}");
    }
}

#[test]
fn a_killed_coordinator_resumes_without_delivering_a_message_twice() {
    let d = Dispatch::new();
    let flow = d.dir.path().join("kill");
    let ran = d.dir.path().join("ran.txt");
    let gate = d.dir.path().join("gate");
    let extra = format!("ENV RAN={}\nENV GATE={}\n", ran.display(), gate.display());
    member(
        &flow,
        "first",
        "cat > /dev/null\necho first >> \"$RAN\"\n",
        &extra,
    );
    // Waits for the gate, so the coordinator can be killed while it runs.
    member(
        &flow,
        "second",
        "cat > /dev/null\necho second >> \"$RAN\"\nwhile [ ! -e \"$GATE\" ]; do sleep 0.05; done\n",
        &extra,
    );
    member(
        &flow,
        "third",
        "cat > /dev/null\necho third >> \"$RAN\"\necho '{\"type\":\"output\",\"value\":\"done\"}' >> \"$DISPATCH_EVENTS\"\n",
        &extra,
    );
    workflow(
        &d,
        "kill",
        "FROM workflow\nNAME kill\nAGENT first ./first\nAGENT second ./second\nAGENT third ./third\nCOORDINATOR chain\n",
    );
    let id = d.detach(&flow, "{}");
    eventually(20, "the second member running", || {
        children(&d, &id)
            .iter()
            .any(|k| k["parcel_name"] == "second" && k["status"] == "running")
    });
    let helper = d.inspect(&id)["state"]["helper"]["pid"]
        .as_u64()
        .expect("helper pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    eventually(10, "the coordinator gone", || !common::alive(helper as u32));
    std::fs::write(&gate, "").expect("open the gate");
    // A reader finds the lost coordinator and a new one resumes from the store.
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], "done");
    assert_eq!(
        std::fs::read_to_string(&ran).expect("ran"),
        "first\nsecond\nthird\n",
        "each member ran once"
    );
    let kids = children(&d, &id);
    assert_eq!(kids.len(), 3);
    assert!(
        kids.iter().all(|k| k["attempt"] == 1),
        "no member ran twice"
    );
    let msgs = doc["workflow"]["messages"].as_array().expect("messages");
    let ids: std::collections::HashSet<&str> =
        msgs.iter().map(|m| m["id"].as_str().expect("id")).collect();
    assert_eq!(
        (msgs.len(), ids.len()),
        (4, 4),
        "each message once: {msgs:?}"
    );
    let delivered: Vec<&str> = msgs
        .iter()
        .filter_map(|m| m["child_run"].as_str())
        .collect();
    let mut unique = delivered.clone();
    unique.dedup();
    assert_eq!(delivered.len(), 3);
    assert_eq!(unique, delivered);
    assert_eq!(
        doc["attempt"], 2,
        "the second attempt is the resumed coordinator"
    );
}

#[test]
fn bad_workflows_fail_the_build_naming_the_line() {
    let d = Dispatch::new();
    let flow = d.dir.path().join("bad");
    member(&flow, "a", "true\n", "");
    let cases = [
        (
            "AGENT a ./a\nROUTE a -> ghost\n",
            "line 4: ROUTE names `ghost`, which is not an AGENT",
        ),
        (
            "AGENT a ./a\nAGENT b ./a\nROUTE a -> b\n",
            "line 3: agent `a` has no path to __end__",
        ),
        (
            "AGENT a ./a\nAGENT b ./a\nROUTE a -> __end__\n",
            "line 4: agent `b` is unreachable",
        ),
        (
            "AGENT a ./a\nAGENT b ./a\nROUTE a -> b\nROUTE b -> a, __end__\n",
            "line 3: the ROUTE graph has a cycle through `a` (hint: add `LIMIT HOPS 20`",
        ),
        (
            "AGENT a ./missing\nROUTE a -> __end__\n",
            "line 3: member `a` (./missing) is neither",
        ),
        (
            "AGENT a ./a\nAGENT b ./a\nROUTE a -> b\nROUTE b -> __end__\nJOIN b\n",
            "line 7: JOIN `b` needs ROUTEs from two or more members to it",
        ),
        (
            "AGENT a ./a\nAGENT b ./a\nCOORDINATOR chain\nJOIN b\n",
            "line 6: JOIN is for `COORDINATOR workflow`",
        ),
    ];
    for (body, want) in cases {
        workflow(&d, "bad", &format!("FROM workflow\nNAME bad\n{body}"));
        let err = d.fails(&["build", path(&flow)], 125);
        assert!(err.contains(want), "{want} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    member(&flow, "broken", "true\n", "COMMAND\n");
    std::fs::write(flow.join("broken/Agentfile"), "FROM process\nNAME broken\n").expect("write");
    workflow(
        &d,
        "bad",
        "FROM workflow\nNAME bad\nAGENT b ./broken\nROUTE b -> __end__\n",
    );
    let err = d.fails(&["build", path(&flow)], 125);
    assert!(
        err.contains("line 3: member `b` (./broken) does not build")
            && err.contains("missing COMMAND"),
        "{err}"
    );
}

#[test]
fn a_members_approval_is_shown_on_the_workflow_and_deciding_it_goes_on() {
    let d = Dispatch::new();
    let flow = d.dir.path().join("ask");
    let ask = "cat > /dev/null\n\
        echo '{\"type\":\"approval\",\"id\":\"publish\",\"summary\":\"Publish it?\"}' >> \"$DISPATCH_EVENTS\"\n\
        while [ ! -e \"$DISPATCH_APPROVALS/publish.json\" ]; do sleep 0.02; done\n\
        echo '{\"type\":\"output\",\"value\":\"published\"}' >> \"$DISPATCH_EVENTS\"\n";
    member(&flow, "editor", ask, "");
    workflow(
        &d,
        "ask",
        "FROM workflow\nNAME ask\nAGENT editor ./editor\nROUTE editor -> __end__\n",
    );
    let id = d.detach(&flow, "{}");
    let mut child = String::new();
    eventually(
        20,
        "the workflow lists its member's pending approval",
        || {
            let approvals = d.inspect(&id)["approvals"].clone();
            match approvals[0]["run_id"].as_str() {
                Some(run) if approvals[0]["id"] == "publish" => {
                    child = run.to_string();
                    true
                }
                _ => false,
            }
        },
    );
    assert_ne!(child, id, "the approval is the member's");
    let human = d.ok(&["inspect-run", &id]);
    assert!(
        human.contains(&format!(
            "publish (Publish it?) pending [member run {child}]"
        )),
        "{human}"
    );
    d.ok(&["approve", &child, "publish"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["output"], "published", "{doc}");
}

#[test]
fn a_member_that_cannot_start_fails_the_workflow_naming_it() {
    let d = Dispatch::new();
    let flow = d.dir.path().join("nokey");
    member(&flow, "needy", "true\n", "SECRET WF_TEST_MISSING_KEY\n");
    workflow(
        &d,
        "nokey",
        "FROM workflow\nNAME nokey\nAGENT needy ./needy\nROUTE needy -> __end__\n",
    );
    let id = d.detach(&flow, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc}");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("member `needy` could not start:")
            && reason.contains("WF_TEST_MISSING_KEY"),
        "{reason}"
    );
    assert_eq!(doc["attempt"], 1, "not retried as a lost coordinator");
}

#[test]
fn a_message_to_an_unknown_agent_fails_only_the_senders_turn() {
    let d = Dispatch::new();
    let flow = d.dir.path().join("lost");
    // `lost` writes to a member that does not exist; `slow` goes on meanwhile.
    member(
        &flow,
        "lost",
        "cat > /dev/null\necho '{\"type\":\"message\",\"to\":\"ghost\",\"payload\":{}}' >> \"$DISPATCH_EVENTS\"\n",
        "",
    );
    member(
        &flow,
        "slow",
        "cat > /dev/null\nsleep 0.3\necho '{\"type\":\"output\",\"value\":\"slow done\"}' >> \"$DISPATCH_EVENTS\"\n",
        "",
    );
    member(
        &flow,
        "fixer",
        "msg=$(cat)\ncase \"$msg\" in *'\"kind\":\"ERROR\"'*'unknown receiver'*) echo '{\"type\":\"output\",\"value\":\"fixed\"}' >> \"$DISPATCH_EVENTS\";; esac\n",
        "",
    );
    member(&flow, "start", "cat > /dev/null\n", "");
    // No ERROR route: the other branch still ends the workflow.
    workflow(
        &d,
        "lost",
        "FROM workflow\nNAME lost\nAGENT start ./start\nAGENT lost ./lost\nAGENT slow ./slow\nROUTE start -> lost, slow\nROUTE lost -> __end__\nROUTE slow -> __end__\n",
    );
    let id = d.detach(&flow, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], "slow done");
    let msgs = doc["workflow"]["messages"].as_array().expect("messages");
    let refused: Vec<&Value> = msgs.iter().filter(|m| m["to"] == "__refused__").collect();
    assert_eq!(refused.len(), 1, "the refusal is recorded: {msgs:?}");
    assert_eq!(refused[0]["from"], "lost");
    assert!(refused[0]["child_run"].is_null(), "never delivered");
    let events = doc["events"].to_string();
    assert!(
        events.contains("__refused__") && events.contains("unknown receiver `ghost`"),
        "the refusal is an event of the workflow run: {events}"
    );

    // Nothing else pending: the workflow fails naming the sender and the receiver.
    workflow(
        &d,
        "lost",
        "FROM workflow\nNAME lost\nAGENT lost ./lost\nROUTE lost -> __end__\n",
    );
    let id = d.detach(&flow, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc}");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("agent `lost` (run ")
            && reason.contains("unknown receiver `ghost`")
            && reason.contains("the message was refused"),
        "{reason}"
    );

    // An ERROR route takes the refused turn's failure.
    workflow(
        &d,
        "lost",
        "FROM workflow\nNAME lost\nAGENT lost ./lost\nAGENT fixer ./fixer\nROUTE lost -> __end__\nROUTE lost -> fixer ON ERROR\nROUTE fixer -> __end__\n",
    );
    let id = d.detach(&flow, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], "fixed");
}

/// The `dispatch internal run-standby` processes started by `parent`.
fn standbys_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The parent pid is the second field after the command's `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains("run-standby") {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_helper_started_ahead_that_dies_before_its_turn_fails_no_member() {
    let d = Dispatch::new();
    let flow = d.dir.path().join("ahead");
    let gate = d.dir.path().join("gate");
    let extra = format!("ENV GATE={}\n", gate.display());
    member(
        &flow,
        "first",
        "cat > /dev/null\nwhile [ ! -e \"$GATE\" ]; do sleep 0.05; done\n",
        &extra,
    );
    member(
        &flow,
        "second",
        "cat > /dev/null\necho '{\"type\":\"output\",\"value\":\"second ran\"}' >> \"$DISPATCH_EVENTS\"\n",
        &extra,
    );
    workflow(
        &d,
        "ahead",
        "FROM workflow\nNAME ahead\nAGENT first ./first\nAGENT second ./second\nCOORDINATOR chain\n",
    );
    let id = d.detach(&flow, "{}");
    eventually(20, "the first member running", || {
        children(&d, &id)
            .iter()
            .any(|k| k["parcel_name"] == "first" && k["status"] == "running")
    });
    let coordinator = d.inspect(&id)["state"]["helper"]["pid"]
        .as_u64()
        .expect("helper pid") as u32;
    let first = children(&d, &id)[0]["state"]["helper"]["pid"]
        .as_u64()
        .expect("the first member's helper") as u32;
    // The helper started ahead for the next turn (not the first member's).
    let mut ahead = Vec::new();
    eventually(20, "a helper started ahead for the next turn", || {
        ahead = standbys_of(coordinator);
        ahead.retain(|p| *p != first);
        !ahead.is_empty()
    });
    for pid in &ahead {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for pid in &ahead {
        eventually(10, "the helper started ahead gone", || {
            !common::alive(*pid) || standbys_of(coordinator).iter().all(|p| p != pid)
        });
    }
    std::fs::write(&gate, "").expect("open the gate");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], "second ran");
    let kids = children(&d, &id);
    assert_eq!(kids.len(), 2, "one run per turn: {kids:?}");
    assert!(kids.iter().all(|k| k["status"] == "succeeded"), "{kids:?}");
}
