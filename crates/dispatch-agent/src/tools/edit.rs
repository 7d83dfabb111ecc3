//! An approver's edit of a tool call's input, recorded truthfully: the
//! call's `tool_call` event says what ran (`input`), what the model asked
//! for (`requested_input`) and who changed it (`edited_by`: the approver,
//! the approval's id, when); the model is told before the tool's output.

use serde_json::{Map, Value, json};

use super::ApprovalAnswer;

/// The longest rendering of one input in the note to the model.
const NOTE_INPUT_CHARS: usize = 2_000;

/// An approval's change of a call's input.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Edit {
    /// What the model asked for.
    pub requested: Value,
    /// What the tool runs with.
    pub input: Value,
    pub by: String,
    pub approval: String,
    /// When the approval was decided (milliseconds since the epoch).
    pub at: Option<i64>,
}

impl Edit {
    /// The edit `answer` makes to `requested`, if its input differs.
    pub(crate) fn of(answer: &ApprovalAnswer, requested: &Value) -> Option<Edit> {
        let input = answer.input.as_ref().filter(|i| *i != requested)?;
        Some(Edit {
            requested: requested.clone(),
            input: input.clone(),
            by: answer.by.clone(),
            approval: answer.id.clone(),
            at: answer.at,
        })
    }

    /// The `tool_call` event's fields: `input` (what ran) replaces the
    /// model's arguments, which stay as `requested_input`.
    pub(crate) fn fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("input".into(), self.input.clone());
        m.insert("requested_input".into(), self.requested.clone());
        m.insert(
            "edited_by".into(),
            json!({"by": self.by, "approval": self.approval, "at": self.at}),
        );
        m
    }

    /// What the model reads before the tool's output.
    pub(crate) fn note(&self) -> String {
        let who = match self.by.trim() {
            "" => "an approver".to_string(),
            by => format!("an approver ({by})"),
        };
        let shown = |v: &Value| dispatch_core::event::shorten(&v.to_string(), NOTE_INPUT_CHARS);
        format!(
            "Note: {who} changed this call's input before it ran: {} (you asked for {}).",
            shown(&self.input),
            shown(&self.requested)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(input: Option<Value>) -> ApprovalAnswer {
        ApprovalAnswer {
            id: "refund-1".into(),
            approved: true,
            by: "ada".into(),
            rationale: None,
            input,
            at: Some(7),
        }
    }

    #[test]
    fn an_edit_says_what_ran_what_was_asked_and_who_changed_it() {
        let edit = Edit::of(&answer(Some(json!({"amount": 20}))), &json!({"amount": 40}))
            .expect("an edit");
        assert_eq!(
            edit.note(),
            r#"Note: an approver (ada) changed this call's input before it ran: {"amount":20} (you asked for {"amount":40})."#
        );
        let f = edit.fields();
        assert_eq!(f["input"], json!({"amount": 20}));
        assert_eq!(f["requested_input"], json!({"amount": 40}));
        assert_eq!(
            f["edited_by"],
            json!({"by": "ada", "approval": "refund-1", "at": 7})
        );
    }

    #[test]
    fn no_input_or_the_same_input_is_no_edit() {
        assert_eq!(Edit::of(&answer(None), &json!({"amount": 40})), None);
        assert_eq!(
            Edit::of(&answer(Some(json!({"amount": 40}))), &json!({"amount": 40})),
            None
        );
    }
}
