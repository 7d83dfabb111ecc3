//! Prompt assembly. The system prompt is the parcel's instructions in this
//! order, each under a Markdown header, separated by blank lines:
//!
//! ```text
//! # Identity          IDENTITY
//! # Soul              SOUL
//! # Skill: <name>     each SKILL, in the order the Agentfile declares them
//! # <document>        each AGENTS, USER, TOOLS, MEMORY POLICY, HEARTBEAT FILE, in order
//! # Task              every PROMPT, in order, separated by blank lines
//! ```
//!
//! An Agent Skills bundle's section starts with its description and ends
//! saying where its files are and how to read them (`read_skill_file`).
//!
//! A section with nothing in it is left out. The run's payload is the first
//! user message: a JSON string as its text, anything else as pretty-printed
//! JSON. The final assistant message is the run's output: parsed as JSON
//! when it is JSON (also inside one ```json fence), else kept as a string.

use dispatch_core::parcel::Instructions;
use serde_json::Value;

/// The system prompt for `instructions` ("" when there are none).
pub fn system_prompt(instructions: &Instructions) -> String {
    let mut sections = Vec::new();
    let mut add = |header: String, body: &str| {
        let body = body.trim();
        if !body.is_empty() {
            sections.push(format!("# {header}\n\n{body}"));
        }
    };
    if let Some(identity) = &instructions.identity {
        add("Identity".into(), identity);
    }
    if let Some(soul) = &instructions.soul {
        add("Soul".into(), soul);
    }
    for skill in &instructions.skills {
        let mut body = String::new();
        if let Some(d) = &skill.description {
            body.push_str(&format!("{}\n\n", d.trim()));
        }
        body.push_str(skill.content.trim());
        if let Some(dir) = &skill.dir {
            body.push_str(&format!(
                "\n\nThis skill's files (scripts, references, assets) are under `{dir}/`; read one with the `read_skill_file` tool, e.g. {{\"path\": \"{dir}/SKILL.md\"}}."
            ));
        }
        add(format!("Skill: {}", skill.name), &body);
    }
    for doc in &instructions.documents {
        add(doc.kind.title().to_string(), &doc.content);
    }
    let task: Vec<&str> = instructions
        .prompts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect();
    add("Task".into(), &task.join("\n\n"));
    sections.join("\n\n")
}

/// The payload as the text of the first user message.
pub fn user_text(payload: &Value) -> String {
    match payload {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
    }
}

/// [`user_text`] of a payload the caller lets go: a string payload becomes
/// the message as it is, not copied.
pub fn into_user_text(payload: Value) -> String {
    match payload {
        Value::String(s) => s,
        other => user_text(&other),
    }
}

/// The run's output for the final assistant text: JSON when it is JSON.
pub fn output_of(text: &str) -> Value {
    let t = text.trim();
    let fenced = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|s| s.strip_suffix("```"))
        .map(str::trim);
    for candidate in [Some(t), fenced].into_iter().flatten() {
        if let Ok(v) = serde_json::from_str::<Value>(candidate)
            && (v.is_object() || v.is_array())
        {
            return v;
        }
    }
    Value::String(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatch_core::parcel::Skill;
    use serde_json::json;

    #[test]
    fn the_system_prompt_has_its_sections_in_order() {
        let ins = Instructions {
            identity: Some("You are Triage.".into()),
            soul: None,
            skills: vec![
                Skill {
                    name: "tone".into(),
                    content: "Be kind.".into(),
                    description: None,
                    dir: None,
                },
                Skill {
                    name: "empty".into(),
                    content: "  ".into(),
                    description: None,
                    dir: None,
                },
            ],
            prompts: vec!["Classify.".into(), "Answer as JSON.".into()],
            documents: Vec::new(),
        };
        assert_eq!(
            system_prompt(&ins),
            "# Identity\n\nYou are Triage.\n\n# Skill: tone\n\nBe kind.\n\n# Task\n\nClassify.\n\nAnswer as JSON."
        );
        assert_eq!(system_prompt(&Instructions::default()), "");
    }

    #[test]
    fn payloads_become_user_text_and_answers_become_output() {
        assert_eq!(user_text(&json!("hi")), "hi");
        assert_eq!(user_text(&json!({"a": 1})), "{\n  \"a\": 1\n}");
        assert_eq!(into_user_text(json!("hi")), "hi");
        assert_eq!(into_user_text(json!({"a": 1})), user_text(&json!({"a": 1})));
        assert_eq!(output_of("{\"a\": 1}"), json!({"a": 1}));
        assert_eq!(output_of("```json\n{\"a\": 1}\n```"), json!({"a": 1}));
        assert_eq!(output_of("hello"), json!("hello"));
        assert_eq!(output_of("42"), json!("42"));
    }
}
