//! The operations routes' answers (workers, usage, quotas, sessions, the
//! notification outbox, parcels, services) are built as `dispatch-api`
//! types and keep the bytes they had as JSON maps: keys in name order,
//! compact, every field present. Each answer read as its type and written
//! back is the very text the server sent, so the type declares every field
//! in the order served and leaves nothing out.

use super::wire::in_name_order;
use super::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A 2xx answer's text, in name order, read as `T`; written back it is the
/// same text (no field the type does not declare, none in another order).
fn typed<T: DeserializeOwned + Serialize>(what: &str, (status, text): (u16, String)) -> T {
    assert!((200..300).contains(&status), "{what}: {status} {text}");
    let value = in_name_order(what, &text);
    let answer: T = serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("{what} as its dispatch-api type: {e}: {text}"));
    let again = serde_json::to_string(&answer).expect("an answer writes");
    assert_eq!(
        again, text,
        "{what}: the type does not write what was served"
    );
    answer
}

fn send(server: &TestServer, method: &str, path: &str, body: &Value) -> (u16, String) {
    let body = body.to_string();
    let json = [("content-type", "application/json")];
    server.raw(method, path, &json, Some(body.as_bytes()))
}

#[test]
fn operations_answers_are_their_dispatch_api_types_byte_for_byte() {
    let Some(server) = TestServer::start(Db::Sqlite, 1) else {
        return;
    };
    let g = |path: &str| server.text(path, &[]);

    // Workers: the server's own beats on start.
    let workers: dispatch_api::WorkerList = typed("listWorkers", g("/v1/workers"));
    assert!(!workers.workers.is_empty(), "the server's own worker");

    // Parcels: upload (tar-less JSON), list, remove, prune.
    let files =
        json!({"files": {"Agentfile": "FROM noop\nNAME spare\nVERSION 1.2\nLABEL team=ops\n"}});
    let built: dispatch_api::ParcelBuilt =
        typed("uploadParcel", send(&server, "POST", "/v1/parcels", &files));
    assert_eq!(
        (built.name.as_str(), built.files),
        ("spare", 0),
        "no COPY: no files"
    );
    let keeper = json!({"files": {
        "Agentfile": "NAME keeper\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        "agent.sh": "echo kept > \"$DISPATCH_SESSION_FILE\"\n",
    }});
    typed::<dispatch_api::ParcelBuilt>(
        "uploadParcel",
        send(&server, "POST", "/v1/parcels", &keeper),
    );
    let doomed = json!({"files": {
        "Agentfile": "NAME doomed\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        "agent.sh": "exit 3\n",
    }});
    typed::<dispatch_api::ParcelBuilt>(
        "uploadParcel",
        send(&server, "POST", "/v1/parcels", &doomed),
    );
    let parcel = server.noop_parcel();
    let list: dispatch_api::ParcelList = typed("listParcels", g("/v1/parcels"));
    assert_eq!(list.parcels.len(), 4);
    let spare = list.parcels.iter().find(|p| p.name == "spare");
    assert_eq!(
        spare.map(|p| (
            p.version.as_deref(),
            p.labels.get("team").map(String::as_str)
        )),
        Some((Some("1.2"), Some("ops")))
    );
    let removed: dispatch_api::ParcelRemoved = typed(
        "removeParcel",
        server.raw("DELETE", "/v1/parcels/spare", &[], None),
    );
    assert_eq!(removed.name, "spare");
    let pruned: dispatch_api::ParcelsPruned = typed(
        "pruneParcels",
        send(&server, "POST", "/v1/parcels/prune", &json!({})),
    );
    assert!(pruned.removed.is_empty());

    // A run that keeps a session file, and one that fails (its outbox message).
    let body = json!({"parcel": "keeper", "session": "s1"});
    let (status, text) = send(&server, "POST", "/v1/runs?wait=true", &body);
    assert_eq!(status, 200, "{text}");
    let body = json!({"parcel": "doomed"});
    let (status, text) = send(&server, "POST", "/v1/runs?wait=true", &body);
    assert_eq!(status, 200, "{text}");

    // Sessions: list, one, prune (nothing unused), remove.
    let sessions: dispatch_api::SessionList = typed("listSessions", g("/v1/sessions"));
    assert_eq!(sessions.sessions.len(), 1);
    assert!(sessions.sessions[0].file && sessions.sessions[0].last_run.is_some());
    let one: dispatch_api::SessionDetail = typed("getSession", g("/v1/sessions/keeper/s1"));
    assert_eq!(one.file_text.as_deref(), Some("kept\n"));
    assert_eq!((one.conversation, one.messages), (None, None));
    let pruned: dispatch_api::SessionsPruned = typed(
        "pruneSessions",
        send(
            &server,
            "POST",
            "/v1/sessions/prune",
            &json!({"until": "1h"}),
        ),
    );
    assert!(pruned.removed.is_empty());
    let gone: dispatch_api::SessionRemoved = typed(
        "removeSession",
        server.raw("DELETE", "/v1/sessions/keeper/s1", &[], None),
    );
    assert!(gone.removed >= 1);

    // The notification outbox: the failed run's message.
    let outbox: dispatch_api::NotificationList =
        typed("listNotifications", g("/v1/notifications?limit=5"));
    assert!(
        outbox.notifications.iter().any(|n| n.kind == "run.failed"),
        "{outbox:?}"
    );

    // The cost report, by each grouping.
    for by in ["parcel", "model", "label", "day", "project"] {
        let report: dispatch_api::UsageReport =
            typed("getUsage", g(&format!("/v1/usage?by={by}&since=1d")));
        assert_eq!(report.by, by);
    }

    // Quotas: set, list, remove.
    let set: dispatch_api::QuotaSet = typed(
        "setQuota",
        send(
            &server,
            "PUT",
            "/v1/quotas/team",
            &json!({"max_live_runs": 10, "tokens_per_day": "2M", "soft": "90%"}),
        ),
    );
    assert_eq!(set.quotas.len(), 2);
    let list: dispatch_api::QuotaList = typed("listQuotas", g("/v1/quotas?project=team"));
    assert_eq!(list.quotas[0].limit, "max_live_runs");
    assert_eq!(list.quotas[1].period.as_ref().map(String::len), Some(10));
    let removed: dispatch_api::QuotaRemoved = typed(
        "removeQuota",
        server.raw("DELETE", "/v1/quotas/team?limit=max_live_runs", &[], None),
    );
    assert_eq!(removed.removed, 1);

    // Services: create, list, its state, a wake.
    let body = json!({"parcel": parcel, "listen": "127.0.0.1:0", "interval_ms": 0, "public": true});
    let created: dispatch_api::ServiceCreated = typed(
        "createService",
        send(&server, "POST", "/v1/services", &body),
    );
    let id = created.run.id.clone();
    let list: dispatch_api::ServiceList = typed("listServices", g("/v1/services"));
    let listed = list.services.iter().find(|s| s.id == id);
    assert_eq!(
        listed.and_then(|s| s.state.as_ref()?.name.as_deref()),
        Some("bench")
    );
    let saved: dispatch_api::ServiceState =
        typed("getServiceState", g(&format!("/v1/runs/{id}/service")));
    assert_eq!(saved.name.as_deref(), Some("bench"));
    let woke: dispatch_api::Run = typed(
        "wakeService",
        send(&server, "POST", &format!("/v1/runs/{id}/wake"), &json!({})),
    );
    assert_eq!(woke.operation, dispatch_core::Operation::Heartbeat);
}
