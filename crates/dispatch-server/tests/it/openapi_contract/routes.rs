//! How the router registers its routes (read from its source) and the
//! routes the document describes.

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

/// How the API router registers its routes, read from its source (axum
/// cannot list a router's routes).
pub(super) struct Registrations {
    /// The handlers named in the table's `routes!(...)` calls: each is
    /// routed and documented by the one registration.
    pub(super) handlers: Vec<String>,
    /// The paths routed with axum's own `.route` (by `catch_all`, for a
    /// documented path whose last parameter is the rest of the URL), as
    /// the document writes them.
    pub(super) catch_alls: Vec<String>,
    /// `.route(`, `.nest(` or `.merge(` calls elsewhere: routes that would
    /// bypass the document.
    pub(super) bypasses: Vec<String>,
}

/// Reads `src/api/table.rs` and the `router` function of `src/api/mod.rs`.
pub(super) fn registrations() -> Registrations {
    let table = include_str!("../../../src/api/table.rs");
    let module = include_str!("../../../src/api/mod.rs");
    let router = module
        .split("pub fn router(")
        .nth(1)
        .and_then(|s| s.split("\n}\n").next())
        .expect("the router function");
    let (rest, catch_all_fn) = table
        .split_once("fn catch_all(")
        .expect("the catch_all function");
    let handlers = rest
        .split("routes!(")
        .skip(1)
        .flat_map(|call| {
            let args = call.split(')').next().unwrap_or("");
            args.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    let catch_alls = rest
        .split("catch_all(\n")
        .skip(1)
        .map(|call| {
            call.split('"')
                .nth(1)
                .expect("a catch-all's served path")
                .replace("{*", "{")
        })
        .collect();
    let mut bypasses = Vec::new();
    for (name, source) in [("router", router), ("table", rest)] {
        for call in [
            ".route(",
            ".nest(",
            ".merge(",
            ".route_service(",
            ".nest_service(",
        ] {
            if source.contains(call) {
                bypasses.push(format!("{name}: {call}"));
            }
        }
    }
    assert_eq!(
        catch_all_fn.matches(".route(").count(),
        1,
        "catch_all routes once"
    );
    Registrations {
        handlers,
        catch_alls,
        bypasses,
    }
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
