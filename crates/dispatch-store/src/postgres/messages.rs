//! Workflow messages on PostgreSQL (see [`crate::MessageStore`]).

use deadpool_postgres::{GenericClient, Transaction};
use dispatch_core::RunId;
use tokio_postgres::Row;

use super::{Fail, to_json};
use crate::{Message, NewMessage};

const COLUMNS: &str =
    "seq, workflow_id, id, sender, sender_run, receiver, kind, payload, created_at, child_run";

pub(super) async fn put(
    tx: &Transaction<'_>,
    workflow: &RunId,
    attempt: u32,
    messages: &[NewMessage],
) -> Result<(), Fail> {
    super::events::lock_run(tx, workflow).await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO messages (workflow_id, id, sender, sender_run, receiver, kind, payload, created_at, child_run)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    let mut events = Vec::new();
    for m in messages {
        let sender_run = m.sender_run.as_ref().map(|r| r.as_str().to_string());
        let child_run = m.child_run.as_ref().map(|r| r.as_str().to_string());
        let payload = to_json("message payload", &m.payload)?;
        let added = tx
            .execute(
                &stmt,
                &[
                    &workflow.as_str(),
                    &m.id,
                    &m.sender,
                    &sender_run,
                    &m.receiver,
                    &m.kind,
                    &payload,
                    &m.created_at,
                    &child_run,
                ],
            )
            .await?;
        if added > 0 {
            events.push(crate::messages::event(m, attempt));
        }
    }
    super::events::append(tx, workflow, &events).await
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
