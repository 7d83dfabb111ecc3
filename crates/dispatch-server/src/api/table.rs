//! The route table. Every API route is registered through utoipa-axum's
//! `routes!`, which takes each handler's `#[utoipa::path]` both to route
//! requests and to describe the route: the OpenAPI document
//! ([`super::openapi::spec`]) is built from these same registrations, so it
//! cannot miss one. The order here is the document's order.

use axum::extract::DefaultBodyLimit;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::{
    AppState, artifact, batch, bom, create, evals, graph, hooks, lifecycle, logs, notifications,
    openapi, parcels, prune, quotas, reliability, report, runs, services, services_list, sessions,
    signal, stream, usage, workers,
};

/// Every API route with its description, on the document's base (title,
/// tags, security; see [`openapi::base`]).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(create::create))
        .routes(routes!(batch::create_batch).layer(DefaultBodyLimit::max(batch::MAX_BATCH_BODY)))
        .routes(routes!(runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::cancel))
        .routes(routes!(lifecycle::start))
        .routes(routes!(lifecycle::replay))
        .routes(routes!(lifecycle::delete))
        .routes(routes!(signal::signal))
        .routes(routes!(prune::prune))
        .routes(routes!(stream::events))
        .routes(routes!(logs::logs))
        .routes(routes!(runs::attempts))
        .routes(routes!(runs::artifacts))
        .routes(routes!(artifact::download))
        .routes(routes!(bom::bom))
        .routes(routes!(graph::graph))
        .routes(routes!(report::report))
        .routes(routes!(reliability::decide))
        .routes(routes!(reliability::list))
        .routes(routes!(reliability::dead_letters))
        .routes(routes!(reliability::replay))
        .routes(routes!(parcels::list))
        .routes(routes!(parcels::upload))
        .routes(routes!(parcels::remove))
        .routes(routes!(parcels::prune))
        .routes(routes!(evals::create))
        .routes(routes!(evals::get))
        .routes(routes!(evals::latest))
        .routes(routes!(services::create))
        .routes(routes!(services::wake))
        .routes(routes!(services::service_state))
        .routes(routes!(services_list::list))
        .routes(routes!(hooks::root));
    // A webhook's path is the rest of the URL: axum's catch-all.
    let router = catch_all(
        router,
        routes!(hooks::with_path, hooks::card),
        "/hooks/{name}/{*path}",
    );
    router
        .routes(routes!(workers::list))
        .routes(routes!(usage::usage))
        .routes(routes!(quotas::list))
        .routes(routes!(quotas::set))
        .routes(routes!(quotas::remove))
        .routes(routes!(sessions::list))
        .routes(routes!(sessions::get))
        .routes(routes!(sessions::remove))
        .routes(routes!(sessions::prune))
        .routes(routes!(notifications::list))
        .routes(routes!(openapi::document))
        .routes(routes!(super::healthz))
        .routes(routes!(super::metrics))
}

/// Registers `handlers`, documented under their one OpenAPI path (whose
/// last parameter is the rest of the URL), routed at `served` (the same
/// path with axum's `{*rest}` for that parameter).
fn catch_all(
    router: OpenApiRouter<AppState>,
    (schemas, paths, method_router): UtoipaMethodRouter<AppState>,
    served: &str,
) -> OpenApiRouter<AppState> {
    let mut router = router.route(served, method_router);
    let doc = router.get_openapi_mut();
    for (path, item) in paths.paths {
        debug_assert_eq!(path, served.replace("{*", "{"), "served where documented");
        match doc.paths.paths.get_mut(&path) {
            Some(known) => known.merge_operations(item),
            None => {
                doc.paths.paths.insert(path, item);
            }
        }
    }
    doc.components
        .get_or_insert_with(Default::default)
        .schemas
        .extend(schemas);
    router
}
