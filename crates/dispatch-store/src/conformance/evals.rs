//! What an [`EvalStore`] promises.

use serde_json::json;

use crate::{EvalRecord, EvalStore};

fn eval(id: &str, digest: &str, at: i64) -> EvalRecord {
    EvalRecord {
        id: id.to_string(),
        parcel_digest: digest.to_string(),
        parcel_name: "triage".into(),
        created_at: at,
        report: json!({"eval": id, "parcel": digest, "results": [{"case": "a", "passed": true}]}),
    }
}

pub async fn evals_are_kept_once_found_by_prefix_and_the_newest_of_a_parcel<S: EvalStore>(
    store: S,
) {
    assert!(
        store
            .put_eval(&eval("e1aa", "abc1", 10))
            .await
            .expect("put")
    );
    assert!(
        store
            .put_eval(&eval("e1ab", "abc1", 30))
            .await
            .expect("put")
    );
    assert!(store.put_eval(&eval("e2", "abc2", 20)).await.expect("put"));
    let mut again = eval("e1aa", "zzz", 99);
    again.report = json!({"replaced": true});
    assert!(
        !store.put_eval(&again).await.expect("put again"),
        "a taken id is refused"
    );
    let found = store.evals_with_prefix("e1aa", 2).await.expect("find");
    assert_eq!(found, vec![eval("e1aa", "abc1", 10)], "the first is kept");
    let both = store.evals_with_prefix("e1", 10).await.expect("find");
    let ids: Vec<&str> = both.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, vec!["e1aa", "e1ab"]);
    assert_eq!(
        store.evals_with_prefix("e1", 1).await.expect("find").len(),
        1
    );
    assert!(
        store
            .evals_with_prefix("x", 5)
            .await
            .expect("find")
            .is_empty()
    );
    let newest = store.latest_eval_of("abc1").await.expect("latest");
    assert_eq!(newest.map(|e| e.id), Some("e1ab".to_string()));
    let by_prefix = store.latest_eval_of("abc").await.expect("latest");
    assert_eq!(
        by_prefix.map(|e| e.id),
        Some("e1ab".to_string()),
        "newest of any match"
    );
    assert_eq!(store.latest_eval_of("fff").await.expect("latest"), None);
}
