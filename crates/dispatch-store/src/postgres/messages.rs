//! Workflow messages on PostgreSQL (see [`crate::MessageStore`]).

use deadpool_postgres::{GenericClient, Transaction};
use dispatch_core::RunId;
use tokio_postgres::Row;

use super::{Fail, to_json};
use crate::{Message, NewMessage};

const COLUMNS: &str =
    "seq, workflow_id, id, sender, sender_run, receiver, kind, payload, created_at, child_run";

/// Stores `messages` in one statement under the workflow run's lock and
/// commits without waiting for the disk (see [`crate::MessageStore`]).
pub(super) async fn put(
    tx: &Transaction<'_>,
    workflow: &RunId,
    attempt: u32,
    messages: &[NewMessage],
) -> Result<Vec<Message>, Fail> {
    // The lock orders the workflow's events; `set_config` rides along.
    let stmt = tx
        .prepare_cached(
            "SELECT set_config('synchronous_commit', 'off', true) FROM runs WHERE id = $1 FOR UPDATE",
        )
        .await?;
    if tx.query_opt(&stmt, &[&workflow.as_str()]).await?.is_none() {
        return Err(super::runs::not_found(workflow));
    }
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let run = |r: &Option<RunId>| r.as_ref().map(|r| r.as_str().to_string());
    let mut payloads = Vec::with_capacity(messages.len());
    for m in messages {
        payloads.push(to_json("message payload", &m.payload)?);
    }
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    let senders: Vec<&str> = messages.iter().map(|m| m.sender.as_str()).collect();
    let sender_runs: Vec<Option<String>> = messages.iter().map(|m| run(&m.sender_run)).collect();
    let receivers: Vec<&str> = messages.iter().map(|m| m.receiver.as_str()).collect();
    let kinds: Vec<&str> = messages.iter().map(|m| m.kind.as_str()).collect();
    let created: Vec<i64> = messages.iter().map(|m| m.created_at).collect();
    let child_runs: Vec<Option<String>> = messages.iter().map(|m| run(&m.child_run)).collect();
    // Numbered in the order given; a message stored already is skipped.
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO messages (workflow_id, id, sender, sender_run, receiver, kind, payload, created_at, child_run) \
             SELECT $1, i, s, sr, r, k, p, c, cr FROM unnest($2::text[], $3::text[], $4::text[], \
             $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[]) \
             WITH ORDINALITY AS m(i, s, sr, r, k, p, c, cr, n) ORDER BY n \
             ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
        ))
        .await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &workflow.as_str(),
                &ids,
                &senders,
                &sender_runs,
                &receivers,
                &kinds,
                &payloads,
                &created,
                &child_runs,
            ],
        )
        .await?;
    let mut stored: Vec<Message> = rows.iter().map(to_message).collect::<Result<_, _>>()?;
    stored.sort_by_key(|m| m.seq);
    let events: Vec<_> = stored
        .iter()
        .map(|m| crate::messages::event(&m.message, attempt))
        .collect();
    super::events::append_locked(tx, workflow, &events).await?;
    Ok(stored)
}

fn to_message(row: &Row) -> Result<Message, Fail> {
    let id: String = row.try_get(2)?;
    let run = |s: Option<String>| s.and_then(|s| s.parse::<RunId>().ok());
    let payload: String = row.try_get(7)?;
    let payload =
        serde_json::from_str(&payload).map_err(|e| Fail::Corrupt(format!("message {id}: {e}")))?;
    let workflow: String = row.try_get(1)?;
    let workflow = workflow
        .parse()
        .map_err(|_| Fail::Corrupt(format!("message {id}: bad workflow id")))?;
    Ok(Message {
        seq: row.try_get(0)?,
        workflow,
        message: NewMessage {
            sender: row.try_get(3)?,
            sender_run: run(row.try_get(4)?),
            receiver: row.try_get(5)?,
            kind: row.try_get(6)?,
            payload,
            created_at: row.try_get(8)?,
            child_run: run(row.try_get(9)?),
            id,
        },
    })
}

pub(super) async fn list<C: GenericClient>(tx: &C, workflow: &RunId) -> Result<Vec<Message>, Fail> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM messages WHERE workflow_id = $1 ORDER BY seq"
        ))
        .await?;
    let rows = tx.query(&stmt, &[&workflow.as_str()]).await?;
    let found: Vec<Message> = rows.iter().map(to_message).collect::<Result<_, _>>()?;
    if found.is_empty() {
        let stmt = tx
            .prepare_cached("SELECT 1 FROM runs WHERE id = $1")
            .await?;
        if tx.query_opt(&stmt, &[&workflow.as_str()]).await?.is_none() {
            return Err(Fail::Store(crate::StoreError::NotFound(
                workflow.to_string(),
            )));
        }
    }
    Ok(found)
}
