//! Every operation, driven on a real server, answers as the document says.

use super::*;

#[test]
fn every_operation_answers_as_documented() {
    let Some(server) = TestServer::start(Db::Sqlite, 2) else {
        return;
    };
    let mut c = Contract {
        doc: doc(),
        server: &server,
        token: None,
        seen: BTreeMap::new(),
    };

    // Operations.
    assert_eq!(c.get("/healthz", "/healthz").0, 200);
    assert_eq!(c.get("/metrics", "/metrics").0, 200);
    assert_eq!(c.get("/v1/openapi.json", "/v1/openapi.json").0, 200);

    // Parcels.
    let parcels = "/v1/parcels";
    let noop = upload_body(&[("Agentfile", "FROM noop\nNAME bench\n")]);
    assert_eq!(c.post(parcels, parcels, &noop).0, 201);
    let asking = upload_body(&[
        (
            "Agentfile",
            "NAME careful\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        ),
        ("agent.sh", ASKING),
    ]);
    assert_eq!(c.post(parcels, parcels, &asking).0, 201);
    let doomed = upload_body(&[
        (
            "Agentfile",
            "NAME doomed\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        ),
        ("agent.sh", "exit 3\n"),
    ]);
    assert_eq!(c.post(parcels, parcels, &doomed).0, 201);
    assert_eq!(c.post(parcels, parcels, "{\"files\": {}}").0, 400);
    let broken = upload_body(&[("Agentfile", "NO SUCH INSTRUCTION\n")]);
    assert_eq!(
        c.post(parcels, parcels, &broken).1["code"],
        "invalid_parcel"
    );
    assert_eq!(c.too_big(parcels, parcels), 413);
    let (_, list) = c.get(parcels, parcels);
    assert_eq!(list["parcels"].as_array().map(Vec::len), Some(3), "{list}");
    // Removed from the cluster: an upload of its own, then gone.
    let spare = upload_body(&[("Agentfile", "FROM noop\nNAME spare\n")]);
    assert_eq!(c.post(parcels, parcels, &spare).0, 201);
    let one = "/v1/parcels/{reference}";
    let (status, removed) = c.call("DELETE", one, "/v1/parcels/spare", &[], None);
    assert_eq!(
        (status, &removed["name"]),
        (200, &json!("spare")),
        "{removed}"
    );
    assert_eq!(c.call("DELETE", one, "/v1/parcels/spare", &[], None).0, 404);
    let (status, pruned) = c.post("/v1/parcels/prune", "/v1/parcels/prune", "{}");
    assert_eq!((status, &pruned["removed"]), (200, &json!([])), "{pruned}");

    // Runs.
    let runs = "/v1/runs";
    let (status, run) = c.post(runs, "/v1/runs?wait=true", "{\"parcel\": \"bench\"}");
    assert_eq!(
        (status, &run["status"]),
        (200, &json!("succeeded")),
        "{run}"
    );
    let id = run["id"].as_str().expect("an id").to_string();
    let keyed = "{\"parcel\": \"bench\", \"idempotency_key\": \"k1\"}";
    assert_eq!(c.post(runs, runs, keyed).0, 201);
    let (status, again) = c.post(runs, runs, keyed);
    assert_eq!((status, &again["deduplicated"]), (200, &json!(true)));
    // Many at once: all or none, keys honoured.
    let batch = "/v1/runs/batch";
    let two = "{\"runs\": [{\"parcel\": \"bench\", \"labels\": [\"nowhere\"]}, {\"parcel\": \"bench\", \"idempotency_key\": \"k1\"}]}";
    let (status, made) = c.post(batch, batch, two);
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["runs"][1]["deduplicated"], json!(true), "{made}");
    assert_eq!(c.post(batch, batch, "{\"runs\": []}").0, 400);
    let (status, queued) = c.post(
        runs,
        runs,
        "{\"parcel\": \"bench\", \"labels\": [\"nowhere\"]}",
    );
    assert_eq!(status, 201);
    let queued = queued["id"].as_str().expect("an id").to_string();
    // A concurrency key per run: the second of a full key is dropped at once.
    let keyed_run = "{\"parcel\": \"bench\", \"labels\": [\"nowhere\"], \"concurrency_key\": \"acme\", \"concurrency_max\": 1, \"concurrency_strategy\": \"drop\"}";
    let (status, first) = c.post(runs, runs, keyed_run);
    assert_eq!(
        (status, &first["status"]),
        (201, &json!("queued")),
        "{first}"
    );
    let first_id = first["id"].as_str().expect("an id").to_string();
    let (status, got) = c.get("/v1/runs/{id}", &format!("/v1/runs/{first_id}"));
    assert_eq!(
        (status, &got["concurrency"]["key"]),
        (200, &json!("bench/acme")),
        "{got}"
    );
    let (status, dropped) = c.post(runs, runs, keyed_run);
    assert_eq!(
        (status, &dropped["status"]),
        (201, &json!("cancelled")),
        "{dropped}"
    );
    let bad = "{\"parcel\": \"bench\", \"concurrency_key\": \"acme\", \"concurrency_strategy\": \"newest\"}";
    assert_eq!(c.post(runs, runs, bad).0, 400);
    let unkeyed = "{\"parcel\": \"bench\", \"concurrency_max\": 2}";
    let (status, err) = c.post(runs, runs, unkeyed);
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no CONCURRENCY KEY"),
        "{err}"
    );
    let streamed = c.call(
        "POST",
        runs,
        runs,
        &[("accept", "text/event-stream")],
        Some(b"{\"parcel\": \"bench\"}"),
    );
    assert_eq!(streamed.0, 200, "the run's events, streamed");
    assert_eq!(c.post(runs, runs, "{\"parcel\": 1}").0, 400);
    assert_eq!(
        c.post(runs, runs, "{\"parcel\": \"nosuch\"}").1["code"],
        "parcel_not_found"
    );
    assert_eq!(c.too_big(runs, runs), 413);
    let (status, page) = c.get(
        runs,
        "/v1/runs?limit=1&status=succeeded,queued&operation=job",
    );
    assert_eq!(status, 200);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    assert_eq!(
        c.get(runs, &format!("/v1/runs?cursor={cursor}&created_after=1h"))
            .0,
        200
    );
    assert_eq!(c.get(runs, "/v1/runs?limit=many").0, 400);
    let (status, manual) = c.get(runs, "/v1/runs?trigger=manual&limit=1");
    assert_eq!(status, 200);
    assert_eq!(manual["runs"][0]["trigger"], "manual", "{manual}");
    assert_eq!(
        c.get(runs, "/v1/runs?trigger=upstream").1["runs"],
        serde_json::json!([])
    );
    assert_eq!(c.get(runs, "/v1/runs?trigger=cron").0, 400);
    assert_eq!(
        c.get(runs, "/v1/runs?parent=0123abcd").1["code"],
        "run_not_found"
    );

    let one = "/v1/runs/{id}";
    assert_eq!(c.get(one, &format!("/v1/runs/{id}")).0, 200);
    assert_eq!(
        c.get(one, &format!("/v1/runs/{}?wait=0.1", &id[..12])).0,
        200
    );
    assert_eq!(c.get(one, "/v1/runs/0123abcd").0, 404);
    assert_eq!(c.get(one, "/v1/runs/not-hex").0, 400);
    for (template, suffix) in [
        ("/v1/runs/{id}/attempts", "attempts"),
        ("/v1/runs/{id}/artifacts", "artifacts"),
        ("/v1/runs/{id}/bom", "bom"),
        ("/v1/runs/{id}/graph", "graph"),
        ("/v1/runs/{id}/report", "report"),
        ("/v1/runs/{id}/logs", "logs"),
        ("/v1/runs/{id}/events", "events"),
    ] {
        assert_eq!(c.get(template, &format!("/v1/runs/{id}/{suffix}")).0, 200);
        assert_eq!(
            c.get(template, &format!("/v1/runs/0123abcd/{suffix}")).0,
            404
        );
        assert_eq!(
            c.get(template, &format!("/v1/runs/not-hex/{suffix}")).0,
            400
        );
    }
    // One artifact's bytes, by digest.
    let maker = upload_body(&[
        (
            "Agentfile",
            "NAME maker\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        ),
        ("agent.sh", "echo made > \"$DISPATCH_ARTIFACTS/made.txt\"\n"),
    ]);
    assert_eq!(c.post(parcels, parcels, &maker).0, 201);
    let (_, made) = c.post(runs, "/v1/runs?wait=true", "{\"parcel\": \"maker\"}");
    let made = made["id"].as_str().expect("an id").to_string();
    let (_, listed) = c.get(
        "/v1/runs/{id}/artifacts",
        &format!("/v1/runs/{made}/artifacts"),
    );
    let sha = listed["artifacts"][0]["sha256"]
        .as_str()
        .expect("an artifact")
        .to_string();
    let artifact = "/v1/runs/{id}/artifacts/{sha256}";
    assert_eq!(
        c.get(artifact, &format!("/v1/runs/{made}/artifacts/{sha}"))
            .0,
        200
    );
    let zeros = "0".repeat(64);
    assert_eq!(
        c.get(artifact, &format!("/v1/runs/{made}/artifacts/{zeros}"))
            .1["code"],
        "artifact_not_found"
    );
    assert_eq!(
        c.get(artifact, &format!("/v1/runs/{made}/artifacts/xyz")).0,
        400
    );
    assert_eq!(
        c.get(artifact, &format!("/v1/runs/0123abcd/artifacts/{sha}"))
            .0,
        404
    );
    let events = "/v1/runs/{id}/events";
    let (_, stored) = c.get(events, &format!("/v1/runs/{id}/events?format=json&after=1"));
    assert!(stored["events"].as_array().is_some_and(|e| !e.is_empty()));
    let headers = [("last-event-id", "2")];
    let path = format!("/v1/runs/{id}/events");
    assert_eq!(c.call("GET", events, &path, &headers, None).0, 200);
    assert_eq!(
        c.call("GET", events, &path, &[("last-event-id", "x")], None)
            .0,
        400
    );

    let cancel = "/v1/runs/{id}/cancel";
    assert_eq!(
        c.post(cancel, &format!("/v1/runs/{queued}/cancel"), "").0,
        200
    );
    assert_eq!(
        c.post(cancel, &format!("/v1/runs/{id}/cancel"), "").1["code"],
        "invalid_state"
    );
    assert_eq!(c.post(cancel, "/v1/runs/0123abcd/cancel", "").0, 404);

    // Signals: kept by a live run, refused for a finished or unknown one.
    let signal = "/v1/runs/{id}/signal";
    let (_, live) = c.post(runs, runs, "{\"parcel\": \"careful\"}");
    let live = live["id"].as_str().expect("an id").to_string();
    let (status, kept) = c.post(
        signal,
        &format!("/v1/runs/{live}/signal"),
        "{\"name\": \"go\", \"value\": {\"n\": 1}}",
    );
    assert_eq!(
        (status, &kept["delivered"]),
        (200, &json!("kept")),
        "{kept}"
    );
    assert_eq!(
        c.post(cancel, &format!("/v1/runs/{live}/cancel"), "").0 / 100,
        2
    );
    assert_eq!(
        c.post(
            signal,
            &format!("/v1/runs/{id}/signal"),
            "{\"name\": \"go\"}"
        )
        .1["code"],
        "invalid_state"
    );
    assert_eq!(
        c.post(
            signal,
            &format!("/v1/runs/{id}/signal"),
            "{\"name\": \"a b\"}"
        )
        .0,
        400
    );
    assert_eq!(
        c.post(signal, "/v1/runs/0123abcd/signal", "{\"name\": \"go\"}")
            .0,
        404
    );
    assert_eq!(c.too_big(signal, &format!("/v1/runs/{id}/signal")), 413);

    // Approvals.
    let (_, asker) = c.post(runs, runs, "{\"parcel\": \"careful\"}");
    let asker = asker["id"].as_str().expect("an id").to_string();
    let approvals = "/v1/approvals";
    c.wait_for(approvals, &format!("/v1/approvals?run={asker}"), |b| {
        b["approvals"].as_array().is_some_and(|a| !a.is_empty())
    });
    assert_eq!(c.get(approvals, "/v1/approvals?pending=false").0, 200);
    assert_eq!(c.get(approvals, "/v1/approvals?pending=perhaps").0, 400);
    assert_eq!(c.get(approvals, "/v1/approvals?run=0123abcd").0, 404);
    let decide = "/v1/runs/{id}/approvals/{approval_id}";
    let path = format!("/v1/runs/{asker}/approvals/send-email");
    let approve = "{\"decision\": \"approve\", \"by\": \"ada\", \"rationale\": \"fine\"}";
    assert_eq!(
        c.post(decide, &path, "{\"decision\": \"maybe\", \"by\": \"ada\"}")
            .0,
        400
    );
    assert_eq!(c.too_big(decide, &path), 413);
    let other = format!("/v1/runs/{asker}/approvals/no-such");
    assert_eq!(
        c.post(decide, &other, approve).1["code"],
        "approval_not_found"
    );
    assert_eq!(c.post(decide, &path, approve).0, 200);
    assert_eq!(c.post(decide, &path, approve).0, 409);
    // Its report, with its tool call, as documented.
    let (status, report) = c.get("/v1/runs/{id}/report", &format!("/v1/runs/{asker}/report"));
    assert_eq!(status, 200);
    assert_eq!(report["tool_calls"][0]["name"], "grep", "{report}");
    // Listed with its decision and project, keys in name order.
    let (_, text) = c
        .server
        .text(&format!("/v1/approvals?run={asker}&pending=false"), &[]);
    let decided = wire::in_name_order("listApprovals", &text);
    assert_eq!(decided["approvals"][0]["decided_by"], "ada");
    assert!(decided["approvals"][0]["project"].is_string());
    // A running run: its worker is asked to stop it.
    let (_, second) = c.post(runs, runs, "{\"parcel\": \"careful\"}");
    let second = second["id"].as_str().expect("an id").to_string();
    c.wait_for(approvals, &format!("/v1/approvals?run={second}"), |b| {
        b["approvals"].as_array().is_some_and(|a| !a.is_empty())
    });
    assert_eq!(
        c.post(cancel, &format!("/v1/runs/{second}/cancel"), "").0,
        202
    );

    // Dead letters.
    let (_, failed) = c.post(
        runs,
        "/v1/runs?wait=true&timeout=30",
        "{\"parcel\": \"doomed\"}",
    );
    let failed = failed["id"].as_str().expect("an id").to_string();
    let letters = "/v1/dead-letters";
    c.wait_for(letters, letters, |b| {
        b["dead_letters"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["run_id"] == failed.as_str()))
    });
    let replay = "/v1/dead-letters/{id}/replay";
    let path = format!("/v1/dead-letters/{failed}/replay");
    assert_eq!(c.post(replay, &path, "{\"payload\":").0, 400);
    assert_eq!(c.too_big(replay, &path), 413);
    assert_eq!(
        c.post(replay, &format!("/v1/dead-letters/{id}/replay"), "")
            .0,
        404
    );
    assert_eq!(c.post(replay, &path, "").0, 201);
    assert_eq!(c.post(replay, &path, "{\"payload\": {\"x\": 2}}").0, 201);
    assert_eq!(c.get(letters, letters).0, 200);

    // Create then start, replay, delete.
    let start = "/v1/runs/{id}/start";
    let (status, created) = c.post(runs, runs, "{\"parcel\": \"bench\", \"start\": false}");
    assert_eq!((status, &created["status"]), (201, &json!("created")));
    let created = created["id"].as_str().expect("an id").to_string();
    assert_eq!(
        c.post(start, &format!("/v1/runs/{created}/start"), "").0,
        200
    );
    assert_eq!(
        c.post(start, &format!("/v1/runs/{id}/start"), "").1["code"],
        "invalid_state"
    );
    assert_eq!(c.post(start, "/v1/runs/0123abcd/start", "").0, 404);
    let replay_run = "/v1/runs/{id}/replay";
    let path = format!("/v1/runs/{id}/replay");
    assert_eq!(
        c.post(replay_run, &path, "").0,
        400,
        "allow_side_effects is required"
    );
    assert_eq!(c.post(replay_run, &path, "{\"nope\": 1}").0, 400);
    assert_eq!(c.too_big(replay_run, &path), 413);
    assert_eq!(c.post(replay_run, "/v1/runs/0123abcd/replay", "{}").0, 404);
    let (status, again) = c.post(replay_run, &path, "{\"allow_side_effects\": true}");
    assert_eq!((status, &again["origin_id"]), (201, &json!(id)), "{again}");
    let delete = "/v1/runs/{id}";
    let (status, removed) = c.call("DELETE", delete, &format!("/v1/runs/{id}"), &[], None);
    assert_eq!(
        (status, &removed["removed"]),
        (200, &json!(id)),
        "{removed}"
    );
    assert_eq!(
        c.call("DELETE", delete, &format!("/v1/runs/{id}"), &[], None)
            .0,
        404
    );
    assert_eq!(
        c.call("DELETE", delete, "/v1/runs/0123abcd?force=maybe", &[], None)
            .0,
        400
    );
    let (_, held) = c.post(
        runs,
        runs,
        "{\"parcel\": \"bench\", \"labels\": [\"nowhere\"]}",
    );
    let held = held["id"].as_str().expect("an id").to_string();
    let path = format!("/v1/runs/{held}");
    assert_eq!(
        c.call("DELETE", delete, &path, &[], None).1["code"],
        "invalid_state"
    );
    assert_eq!(
        c.call("DELETE", delete, &format!("{path}?force=true"), &[], None)
            .0,
        200
    );
    // Prune: a dry run says, a real one removes; bad filters are 400s.
    let prune = "/v1/runs/prune";
    let cancelled = "{\"filters\": {\"status\": [\"cancelled\"]}, \"dry_run\": true}";
    let (status, would) = c.post(prune, prune, cancelled);
    assert_eq!(status, 200, "{would}");
    let would = would["removed"].as_array().cloned().unwrap_or_default();
    assert!(!would.is_empty(), "the cancelled runs");
    let (status, done) = c.post(prune, prune, &cancelled.replace("true", "false"));
    assert_eq!(status, 200, "{done}");
    // Everything the dry run named goes (a run whose stop was still
    // landing may have become cancelled in between, and goes too).
    let removed = done["removed"].as_array().cloned().unwrap_or_default();
    assert!(
        would.iter().all(|id| removed.contains(id)),
        "{would:?} ⊄ {removed:?}"
    );
    assert_eq!(c.get(one, &format!("/v1/runs/{queued}")).0, 404);
    let bad = "{\"filters\": {\"status\": [\"running\"]}}";
    assert_eq!(c.post(prune, prune, bad).0, 400);
    assert_eq!(c.post(prune, prune, "{\"filter\": {}}").0, 400);
    assert_eq!(c.post(prune, "/v1/runs/prune?status=failed", "").0, 400);
    assert_eq!(c.too_big(prune, prune), 413);

    // Evals: keep a report, read it by id (or prefix), the newest of a parcel.
    let evals = "/v1/evals";
    let report = json!({"eval": "0evalcontract1", "parcel": "abcdef0123", "parcel_name": "bench",
        "created_at": 1000, "results": [], "summary": {"runs": 0, "ok": true}});
    assert_eq!(c.post(evals, evals, &report.to_string()).0, 201);
    assert_eq!(c.post(evals, evals, &report.to_string()).0, 409);
    assert_eq!(c.post(evals, evals, "{\"eval\": \"x\"}").0, 400);
    assert_eq!(c.post(evals, evals, "[").0, 400);
    assert_eq!(c.too_big(evals, evals), 413);
    let one = "/v1/evals/{id}";
    let (status, got) = c.get(one, "/v1/evals/0evalcontract1");
    assert_eq!((status, &got["parcel_name"]), (200, &json!("bench")));
    assert_eq!(c.get(one, "/v1/evals/0evalc").0, 200);
    assert_eq!(c.get(one, "/v1/evals/nothing-here").0, 404);
    let latest = "/v1/evals/latest";
    assert_eq!(
        c.get(latest, "/v1/evals/latest?parcel=sha256:abcdef").0,
        200
    );
    assert_eq!(c.get(latest, "/v1/evals/latest?parcel=ffff").0, 404);
    assert_eq!(c.get(latest, "/v1/evals/latest").0, 400);
    assert_eq!(c.get(latest, "/v1/evals/latest?digest=abc").0, 400);

    // Services owned by the cluster: webhooks and manual wakes.
    let services = "/v1/services";
    let (status, created) = c.post(
        services,
        services,
        "{\"parcel\": \"bench\", \"listen\": \"127.0.0.1:0\", \"interval_ms\": 0, \"public\": true}",
    );
    assert_eq!(
        (status, &created["hook"]),
        (201, &json!("/hooks/bench")),
        "{created}"
    );
    let service = created["run"]["id"].as_str().expect("an id").to_string();
    let pathy = "{\"parcel\": \"bench\", \"name\": \"pathy\", \"listen_path\": \"/in\", \"public\": true, \"schedules\": [\"0 0 1 1 *\"]}";
    assert_eq!(c.post(services, services, pathy).0, 201);
    assert_eq!(
        c.post(services, services, pathy).1["code"],
        "service_exists"
    );
    let bad_cron = "{\"parcel\": \"bench\", \"name\": \"x\", \"schedules\": [\"* * 25 * * *\"]}";
    assert_eq!(c.post(services, services, bad_cron).0, 400);
    assert_eq!(c.post(services, services, "{\"parcel\": \"nope\"}").0, 404);
    let wake = "/v1/runs/{id}/wake";
    let (status, heartbeat) = c.post(wake, &format!("/v1/runs/{service}/wake"), "");
    assert_eq!(
        (status, &heartbeat["operation"]),
        (202, &json!("heartbeat"))
    );
    let heartbeat = heartbeat["id"].as_str().expect("an id").to_string();
    assert_eq!(
        c.post(wake, &format!("/v1/runs/{heartbeat}/wake"), "{}").0,
        409
    );
    assert_eq!(c.post(wake, "/v1/runs/ffffffff/wake", "{}").0, 404);
    let (root, with_path) = ("/hooks/{name}", "/hooks/{name}/{path}");
    assert_eq!(c.post(root, "/hooks/bench", "{}").0, 202);
    assert_eq!(c.post(root, "/hooks/nobody", "{}").0, 404);
    assert_eq!(c.post(with_path, "/hooks/pathy/in", "{}").0, 202);
    assert_eq!(c.post(with_path, "/hooks/pathy/out", "{}").0, 404);
    // The running services, with the same state.
    let (status, listed) = c.get(services, services);
    assert_eq!(status, 200, "{listed}");
    let mine = listed["services"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["id"] == json!(service)))
        .unwrap_or_else(|| panic!("the service is listed: {listed}"));
    assert_eq!(mine["state"]["name"], json!("bench"), "{listed}");
    assert_eq!(mine["status"], json!("running"), "{listed}");
    let state = "/v1/runs/{id}/service";
    let (status, saved) = c.get(state, &format!("/v1/runs/{service}/service"));
    assert_eq!((status, &saved["name"]), (200, &json!("bench")), "{saved}");
    assert_eq!(
        c.get(state, &format!("/v1/runs/{heartbeat}/service")).0,
        409
    );
    assert_eq!(c.get(state, "/v1/runs/ffffffff/service").0, 404);
    let (status, stopped) = c.post(cancel, &format!("/v1/runs/{service}/cancel"), "");
    assert_eq!((status, &stopped["status"]), (200, &json!("stopped")));

    // The workers (the server's own beats on start).
    let (status, workers) = c.get("/v1/workers", "/v1/workers");
    assert_eq!(status, 200, "{workers}");
    assert!(workers["workers"].is_array(), "{workers}");

    // The cost report, by each grouping, and a bad one.
    for by in ["parcel", "model", "label", "day"] {
        let (status, usage) = c.get("/v1/usage", &format!("/v1/usage?by={by}&since=1d"));
        assert_eq!(status, 200, "{usage}");
        assert_eq!(usage["by"], by, "{usage}");
    }
    assert_eq!(c.get("/v1/usage", "/v1/usage?by=team").0, 400);

    // Quotas: set (a bad value is a 400), listed, one limit removed.
    let quota = "/v1/quotas/{project}";
    let json_body = [("content-type", "application/json")];
    let body = br#"{"max_live_runs": 10, "tokens_per_day": "2M", "soft": "90%"}"#;
    let (status, set) = c.call("PUT", quota, "/v1/quotas/team", &json_body, Some(body));
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["quotas"].as_array().map(Vec::len), Some(2), "{set}");
    let bad = br#"{"max_live_runs": 0}"#;
    assert_eq!(
        c.call("PUT", quota, "/v1/quotas/team", &json_body, Some(bad))
            .0,
        400
    );
    let (status, listed) = c.get("/v1/quotas", "/v1/quotas?project=team");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["quotas"][0]["limit"], "max_live_runs", "{listed}");
    assert_eq!(listed["quotas"][1]["soft_pct"], 90, "{listed}");
    let (status, removed) = c.call(
        "DELETE",
        quota,
        "/v1/quotas/team?limit=max_live_runs",
        &[],
        None,
    );
    assert_eq!((status, &removed["removed"]), (200, &json!(1)), "{removed}");

    sessions::exercise(&mut c);

    // The notification outbox (a bad limit is a 400).
    let (status, outbox) = c.get("/v1/notifications", "/v1/notifications?limit=5");
    assert_eq!(status, 200, "{outbox}");
    assert!(outbox["notifications"].is_array(), "{outbox}");
    let bad = "/v1/notifications?limit=0";
    assert_eq!(c.get("/v1/notifications", bad).0, 400);

    // Every operation answered, with success at least once.
    let all: BTreeSet<String> = operations(&c.doc)
        .into_iter()
        .filter_map(|(_, _, op)| op["operationId"].as_str().map(str::to_string))
        .collect();
    for id in &all {
        let seen = c.seen.get(id).cloned().unwrap_or_default();
        assert!(
            seen.iter().any(|s| (200..300).contains(s)),
            "{id} was not exercised with success: {seen:?}"
        );
    }
}
