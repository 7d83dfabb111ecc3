//! The `messages` table (see [`crate::MessageStore`]).

use dispatch_core::RunId;
use rusqlite::{Row, Transaction, params};

use super::{Fail, to_json};
use crate::{Message, NewMessage};

const COLUMNS: &str =
    "seq, workflow_id, id, sender, sender_run, receiver, kind, payload, created_at, child_run";

pub(super) fn put(
    tx: &Transaction<'_>,
    workflow: &RunId,
    attempt: u32,
    messages: &[NewMessage],
) -> Result<Vec<Message>, Fail> {
    if !super::runs::exists(tx, workflow)? {
        return Err(Fail::Store(crate::StoreError::NotFound(
            workflow.to_string(),
        )));
    }
    let mut events = Vec::new();
    let mut stored = Vec::new();
    for m in messages {
        let added = tx
            .prepare_cached(
                "INSERT INTO messages (workflow_id, id, sender, sender_run, receiver, kind, payload, created_at, child_run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![
                workflow.as_str(),
                m.id,
                m.sender,
                m.sender_run.as_ref().map(RunId::as_str),
                m.receiver,
                m.kind,
                to_json("message payload", &m.payload)?,
                m.created_at,
                m.child_run.as_ref().map(RunId::as_str),
            ])?;
        if added > 0 {
            events.push(crate::messages::event(m, attempt));
            stored.push(Message {
                seq: tx.last_insert_rowid(),
                workflow: workflow.clone(),
                message: m.clone(),
            });
        }
    }
    super::events::append(tx, workflow, &events)?;
    Ok(stored)
}

type Raw = (
    i64,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    i64,
    Option<String>,
);

fn raw(row: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
    ))
}

fn to_message(r: Raw) -> Result<Message, Fail> {
    let (seq, workflow, id, sender, sender_run, receiver, kind, payload, created_at, child_run) = r;
    let run = |s: Option<String>| s.and_then(|s| s.parse::<RunId>().ok());
    let payload =
        serde_json::from_str(&payload).map_err(|e| Fail::Corrupt(format!("message {id}: {e}")))?;
    let workflow = workflow
        .parse()
        .map_err(|_| Fail::Corrupt(format!("message {id}: bad workflow id")))?;
    Ok(Message {
        seq,
        workflow,
        message: NewMessage {
            id,
            sender,
            sender_run: run(sender_run),
            receiver,
            kind,
            payload,
            created_at,
            child_run: run(child_run),
        },
    })
}

pub(super) fn list(tx: &Transaction<'_>, workflow: &RunId) -> Result<Vec<Message>, Fail> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages WHERE workflow_id = ?1 ORDER BY seq"
    ))?;
    let rows = stmt.query_map([workflow.as_str()], raw)?;
    let found: Vec<Message> = rows.map(|r| to_message(r?)).collect::<Result<_, _>>()?;
    if found.is_empty() && !super::runs::exists(tx, workflow)? {
        return Err(Fail::Store(crate::StoreError::NotFound(
            workflow.to_string(),
        )));
    }
    Ok(found)
}
