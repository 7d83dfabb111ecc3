//! Projects: every run belongs to one, listings filter by them, and tokens
//! keep the projects they are bound to with a role in each.

use dispatch_core::project::DEFAULT_PROJECT;

use super::{create, id, new_run};
use crate::{
    ProjectRole, QueueOptions, QueueStore, RunExtras, RunFilter, Store, TokenRecord, TokenScope,
    TokenStore,
};

fn in_project(n: u128, project: &str) -> crate::NewRun {
    crate::NewRun {
        project: project.to_string(),
        ..new_run(id(n), "p", n as i64)
    }
}

async fn ids<S: Store>(store: &S, filter: RunFilter) -> Vec<dispatch_core::RunId> {
    store
        .list_runs(&filter)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect()
}

pub async fn a_run_keeps_its_project_and_listings_filter_by_it<S: Store + QueueStore>(store: S) {
    let made = create(&store, new_run(id(1), "p", 1)).await;
    assert_eq!(made.project, DEFAULT_PROJECT, "a run names its project");
    let paid = create(&store, in_project(2, "payments")).await;
    assert_eq!(paid.project, "payments");
    assert_eq!(
        store.get_run(&id(2)).await.expect("get").project,
        "payments",
        "read back"
    );
    // Every way in keeps it: with extras, and through the queue.
    store
        .create_run_with(&in_project(3, "search"), &RunExtras::default(), false)
        .await
        .expect("create with extras");
    store
        .enqueue(&in_project(4, "payments"), &QueueOptions::default())
        .await
        .expect("enqueue");

    let only = |projects: &[&str]| RunFilter {
        projects: projects.iter().map(|p| p.to_string()).collect(),
        ..RunFilter::default()
    };
    assert_eq!(ids(&store, only(&["payments"])).await, vec![id(4), id(2)]);
    assert_eq!(
        ids(&store, only(&["search", DEFAULT_PROJECT])).await,
        vec![id(3), id(1)],
        "any of several"
    );
    assert_eq!(ids(&store, only(&["nobody"])).await, vec![]);
    assert_eq!(
        ids(&store, RunFilter::default()).await,
        vec![id(4), id(3), id(2), id(1)],
        "no project: all of them"
    );
    let summary = RunFilter {
        summary: true,
        ..only(&["search"])
    };
    let listed = store.list_runs(&summary).await.expect("summary");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].project, "search", "a summary carries the project");
}

fn token(id: &str, scope: TokenScope, projects: &[(&str, TokenScope)]) -> TokenRecord {
    TokenRecord {
        id: id.to_string(),
        name: format!("name-{id}"),
        created_at: 10,
        revoked_at: None,
        scope,
        expires_at: None,
        projects: projects
            .iter()
            .map(|(project, role)| ProjectRole {
                project: project.to_string(),
                role: *role,
            })
            .collect(),
    }
}

pub async fn a_token_keeps_its_role_in_each_project<S: TokenStore>(store: S) {
    let bound = token(
        "ci",
        TokenScope::Run,
        &[("search", TokenScope::Read), ("payments", TokenScope::Run)],
    );
    store.create_token(&bound, "hash-ci").await.expect("create");
    let free = token("root", TokenScope::Admin, &[]);
    store
        .create_token(&free, "hash-root")
        .await
        .expect("create");

    let found = store
        .find_token("hash-ci")
        .await
        .expect("find")
        .expect("live");
    assert_eq!(
        found.projects,
        vec![
            ProjectRole {
                project: "payments".into(),
                role: TokenScope::Run
            },
            ProjectRole {
                project: "search".into(),
                role: TokenScope::Read
            },
        ],
        "bindings by project name"
    );
    assert_eq!(found.role_in("payments"), Some(TokenScope::Run));
    assert_eq!(found.role_in("search"), Some(TokenScope::Read));
    assert_eq!(found.role_in(DEFAULT_PROJECT), None, "not bound there");
    let root = store
        .find_token("hash-root")
        .await
        .expect("find")
        .expect("live");
    assert!(root.projects.is_empty());
    assert_eq!(
        root.role_in("anything"),
        Some(TokenScope::Admin),
        "a token bound to no project keeps its scope everywhere"
    );
    let listed = store.list_tokens().await.expect("list");
    assert_eq!(listed[0].projects.len(), 2, "listings carry the bindings");
    let revoked = store.revoke_token("ci", 20).await.expect("revoke");
    assert_eq!(revoked.projects.len(), 2, "and a revocation's answer");
}

pub async fn the_cost_report_counts_only_the_projects_asked_for<
    S: Store + QueueStore + crate::UsageStore,
>(
    store: S,
) {
    for (n, project, cost) in [(1, "payments", 0.5), (2, "search", 0.25)] {
        create(&store, in_project(n, project)).await;
        let data = serde_json::json!({"model": "m", "input_tokens": 10, "output_tokens": 1, "cost_usd": cost});
        let event = dispatch_core::NewEvent::of(dispatch_core::RunEvent::Usage(data), 1, 100);
        store.append_events(&id(n), &[event]).await.expect("usage");
    }
    let cost = |projects: &[&str]| {
        let q = crate::UsageQuery {
            projects: projects.iter().map(|p| p.to_string()).collect(),
            ..crate::UsageQuery::default()
        };
        let store = &store;
        async move {
            let rows = store.usage(&q).await.expect("usage");
            rows.iter().map(|r| r.cost_usd).sum::<f64>()
        }
    };
    assert_eq!(cost(&["payments"]).await, 0.5);
    assert_eq!(cost(&["search", "payments"]).await, 0.75);
    assert_eq!(cost(&["nobody"]).await, 0.0);
    assert_eq!(cost(&[]).await, 0.75, "no project: all of them");
}
