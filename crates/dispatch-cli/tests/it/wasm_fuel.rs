//! `LIMIT FUEL` for WASM agents: the guest's WebAssembly instructions are
//! metered (wasmtime fuel); a guest that burns its fuel fails the run
//! `budget_exceeded` at once, whatever its TIMEOUT, and what an attempt
//! burned is its `resources` in `inspect-run`. Other couriers refuse the
//! line at build.

use crate::common;
use crate::native_common;
use crate::wasm::{echo_then_answer, model_line, wasm_agent};

use common::Dispatch;
use native_common::Mock;
use serde_json::{Value, json};

fn resources(doc: &Value) -> &Value {
    &doc["attempts"][0]["resources"]
}

#[test]
fn a_guest_in_an_endless_loop_burns_its_fuel_and_fails_budget_exceeded() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([]));
    // A long TIMEOUT: the fuel, not the clock, ends it.
    let lines = format!("{}\nLIMIT FUEL 5000000\nTIMEOUT RUN 10m", model_line(&mock));
    let dir = wasm_agent(d.dir.path(), "spin", "spin", &lines);
    let id = d.detach(&dir, "\"go\"");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("budget_exceeded: fuel: the guest burned its LIMIT FUEL of 5000000"),
        "{reason}"
    );
    assert_eq!(resources(&doc)["fuel_used"], 5_000_000, "{doc:#}");
    let text = d.ok(&["inspect-run", &id]);
    assert!(text.contains("fuel 5000000 (wasmtime)"), "{text}");
    assert!(text.contains(", fuel 5000000"), "{text}");
}

#[test]
fn a_guest_within_its_fuel_answers_and_its_burn_is_recorded() {
    let d = Dispatch::new();
    let mock = Mock::start(echo_then_answer());
    let lines = format!("{}\nLIMIT FUEL 1000000000", model_line(&mock));
    let dir = wasm_agent(d.dir.path(), "metered", "answer", &lines);
    let id = d.detach(&dir, "\"hi\"");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"], "The echo said hi.", "{doc:#}");
    let used = resources(&doc)["fuel_used"].as_u64().expect("fuel used");
    assert!(used > 0 && used < 1_000_000_000, "{used}");
    let bom = doc["events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["type"] == "bom")
        .expect("a bom");
    assert_eq!(bom["data"]["component"]["fuel"], 1_000_000_000, "{bom}");

    // The same component without the limit runs on the engine that counts
    // nothing, and records no fuel.
    let mock = Mock::start(echo_then_answer());
    let dir = wasm_agent(d.dir.path(), "unmetered", "answer", &model_line(&mock));
    let id = d.detach(&dir, "\"hi\"");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert!(resources(&doc).get("fuel_used").is_none(), "{doc:#}");
}

#[test]
fn limit_fuel_is_refused_where_it_cannot_hold() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([]));
    let dir = d.dir.path().join("native");
    std::fs::create_dir_all(&dir).expect("dir");
    let build = |d: &Dispatch, agentfile: String| {
        std::fs::write(dir.join("Agentfile"), agentfile).expect("Agentfile");
        d.fails(&["build", dir.to_str().expect("utf-8")], 125)
    };
    let err = build(
        &d,
        format!(
            "FROM agent\nNAME n\n{}\nLIMIT FUEL 1000\n",
            model_line(&mock)
        ),
    );
    assert!(err.contains("line 4"), "{err}");
    assert!(
        err.contains("LIMIT FUEL meters a WebAssembly guest's instructions"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let dir = wasm_agent(d.dir.path(), "w", "answer", &model_line(&mock));
    for bad in ["0", "lots", "-5"] {
        std::fs::write(
            dir.join("Agentfile"),
            format!(
                "FROM dispatch/wasm\nNAME w\nCOMPONENT components/guest.wasm\n{}\nLIMIT FUEL {bad}\n",
                model_line(&mock)
            ),
        )
        .expect("Agentfile");
        let err = d.fails(&["build", dir.to_str().expect("utf-8")], 125);
        assert!(err.contains("LIMIT FUEL"), "{bad}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
