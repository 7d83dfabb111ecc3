//! The routes the router serves (read from its source) and those the
//! document describes.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

/// The target directory this test binary runs from (`target/debug/deps/..`).
pub(super) fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .map(PathBuf::from)
        .expect("the binary lives under target/<profile>/deps")
}

/// `(method, path)` of every route in the router (`src/api/mod.rs`), read
/// from its source: axum cannot list a router's routes.
pub(super) fn served_routes() -> BTreeSet<(String, String)> {
    let source = include_str!("../../../src/api/mod.rs");
    let table = source
        .split("pub fn router(")
        .nth(1)
        .and_then(|s| s.split(".fallback(").next())
        .expect("the router's route table");
    let mut routes = BTreeSet::new();
    for route in table.split(".route(").skip(1) {
        let path = route
            .split('"')
            .nth(1)
            .expect("a route's path")
            .replace("{*", "{");
        let handlers = route.split('"').nth(2).expect("a route's handlers");
        for method in ["get", "post", "put", "patch", "delete"] {
            let calls = handlers
                .match_indices(&format!("{method}("))
                .filter(|(i, _)| {
                    !handlers[..*i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                })
                .count();
            if calls > 0 {
                routes.insert((method.to_string(), path.clone()));
            }
        }
    }
    routes
}

/// `(method, path)` of every operation in the document.
pub(super) fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            routes.insert((method.clone(), path.clone()));
        }
    }
    routes
}

/// Every operation: `(method, path, operation)`.
pub(super) fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    documented_routes(doc)
        .into_iter()
        .map(|(m, p)| {
            let op = doc["paths"][&p][&m].clone();
            (m, p, op)
        })
        .collect()
}
