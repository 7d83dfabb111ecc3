//! The session routes and a cluster A2A service's card, called on the
//! contract's server.

use super::*;

pub(super) fn exercise(c: &mut Contract<'_>) {
    // A run that keeps a session file: its session is then listed, shown,
    // pruned only when unused, and removed.
    let keeper = upload_body(&[
        (
            "Agentfile",
            "NAME keeper\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        ),
        ("agent.sh", "echo 1 > \"$DISPATCH_SESSION_FILE\"\n"),
    ]);
    assert_eq!(c.post("/v1/parcels", "/v1/parcels", &keeper).0, 201);
    let (status, run) = c.post(
        "/v1/runs",
        "/v1/runs?wait=true",
        "{\"parcel\": \"keeper\", \"session\": \"s1\"}",
    );
    assert_eq!(
        (status, &run["status"]),
        (200, &json!("succeeded")),
        "{run}"
    );
    let list = "/v1/sessions";
    let (status, listed) = c.get(list, "/v1/sessions?prefix=keeper/");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["sessions"][0]["name"], "keeper/s1", "{listed}");
    assert_eq!(c.get(list, "/v1/sessions?nope=1").0, 400);
    let one = "/v1/sessions/{parcel}/{name}";
    let (status, shown) = c.get(one, "/v1/sessions/keeper/s1");
    assert_eq!((status, &shown["file"]), (200, &json!(true)), "{shown}");
    assert_eq!(
        c.get(one, "/v1/sessions/keeper/none").1["code"],
        "session_not_found"
    );
    assert_eq!(c.get(one, "/v1/sessions/keeper/.hidden").0, 400);
    let prune = "/v1/sessions/prune";
    let (status, pruned) = c.post(prune, prune, "{\"until\": \"1h\"}");
    assert_eq!((status, &pruned["removed"]), (200, &json!([])), "{pruned}");
    assert_eq!(c.post(prune, prune, "{\"until\": \"soon\"}").0, 400);
    let (status, removed) = c.call("DELETE", one, "/v1/sessions/keeper/s1", &[], None);
    assert_eq!(status, 200, "{removed}");
    assert_eq!(
        c.call("DELETE", one, "/v1/sessions/keeper/s1", &[], None).0,
        404
    );

    // A cluster service served as an A2A agent: its card, without a token.
    let services = "/v1/services";
    let agent = "{\"parcel\": \"bench\", \"name\": \"agent\", \"a2a\": true, \"listen\": \"127.0.0.1:0\", \"public\": true}";
    assert_eq!(c.post(services, services, agent).0, 201);
    let card = "/hooks/{name}/{path}";
    let (status, shown) = c.get(card, "/hooks/agent/.well-known/agent-card.json");
    assert_eq!((status, &shown["name"]), (200, &json!("bench")), "{shown}");
    assert_eq!(
        c.get(card, "/hooks/nobody/.well-known/agent-card.json").0,
        404
    );
}
