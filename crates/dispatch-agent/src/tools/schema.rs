//! Tool schemas and their compiled validators, shared by every run of the
//! process that offers the same schema (issue #38: a waiting run held its
//! own `{"type": "object"}`, a 632-byte map node, and its own compiled
//! validator, ~840 bytes, for each of its tools).
//!
//! A validator is kept while a run uses it (a weak entry in the cache): a
//! worker running a thousand runs of one agent holds one per schema, and
//! a schema no run uses any more is compiled again when one does.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use jsonschema::Validator;
use serde_json::{Value, json};

/// The schema of a tool that declares none: any object.
pub(super) fn any_object() -> Arc<Value> {
    static ANY: LazyLock<Arc<Value>> = LazyLock::new(|| Arc::new(json!({"type": "object"})));
    ANY.clone()
}

/// The validators compiled, by their schema's JSON text.
static COMPILED: LazyLock<Mutex<HashMap<String, Weak<Validator>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Dead entries are dropped whenever the cache grows past this many.
const PRUNE_ABOVE: usize = 64;

/// `schema` compiled, the one a run of this process already uses when
/// there is one; the compiler's error otherwise.
pub(super) fn validator(schema: &Value) -> Result<Arc<Validator>, String> {
    let key = serde_json::to_string(schema).map_err(|e| e.to_string())?;
    if let Some(v) = lock().get(&key).and_then(Weak::upgrade) {
        return Ok(v);
    }
    // Compiled outside the lock: another run may compile the same schema
    // at once, and the last one kept wins (both are the same).
    let v = Arc::new(jsonschema::validator_for(schema).map_err(|e| e.to_string())?);
    let mut cache = lock();
    if cache.len() >= PRUNE_ABOVE {
        cache.retain(|_, w| w.strong_count() > 0);
    }
    cache.insert(key, Arc::downgrade(&v));
    Ok(v)
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<String, Weak<Validator>>> {
    // A panic while holding it left nothing half-written: a map of weak
    // pointers, each inserted whole.
    COMPILED.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_offering_one_schema_share_its_validator_while_one_holds_it() {
        let schema =
            json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]});
        let a = validator(&schema).expect("compiles");
        let b = validator(&schema.clone()).expect("compiles");
        assert!(Arc::ptr_eq(&a, &b), "the second run got the first's");
        assert!(a.is_valid(&json!({"q": "x"})));
        assert!(!a.is_valid(&json!({"q": 1})));
        let other = validator(&json!({"type": "object", "required": ["r"]})).expect("compiles");
        assert!(!Arc::ptr_eq(&a, &other));
        drop((a, b));
        // Nobody holds it: compiled anew, and still right.
        let c = validator(&schema).expect("compiles");
        assert!(c.is_valid(&json!({"q": "y"})) && !c.is_valid(&json!({})));
        assert!(Arc::ptr_eq(&any_object(), &any_object()));
    }

    #[test]
    fn a_schema_that_does_not_compile_says_why() {
        let Err(e) = validator(&json!({"type": "no-such-type"})) else {
            panic!("a type that does not exist compiled");
        };
        assert!(e.contains("no-such-type"), "{e}");
    }
}
