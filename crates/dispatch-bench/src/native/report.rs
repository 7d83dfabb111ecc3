//! What `dispatch-bench native` prints: a Markdown table, one row as each
//! measurement ends (`--format table`), or one JSON object at the end
//! (`--format json`) whose keys are the measurements, each an object of
//! numbers.

use serde_json::{Map, Value};

pub(super) struct Report {
    json: bool,
    values: Map<String, Value>,
}

impl Report {
    pub(super) fn new(json: bool) -> Report {
        if !json {
            println!("| measurement | result | target |\n|---|---|---|");
        }
        Report {
            json,
            values: Map::new(),
        }
    }

    /// One row of the table (nothing in JSON: the numbers go by [`Report::set`]).
    pub(super) fn row(&self, measurement: &str, result: &str, target: &str) {
        if !self.json {
            println!("| {measurement} | {result} | {target} |");
        }
    }

    /// `key` of measurement `section` in the JSON object (a float that is
    /// not a number, such as a percentile of nothing, becomes `null`).
    pub(super) fn set(&mut self, section: &str, key: &str, value: impl Into<Value>) {
        let entry = self
            .values
            .entry(section.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(key.to_string(), value.into());
        }
    }

    /// Prints the JSON object (nothing more for the table).
    pub(super) fn finish(self) {
        if self.json {
            println!("{}", Value::Object(self.values));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_group_by_measurement_and_nan_is_null() {
        let mut r = Report::new(true);
        r.set("memory", "runs", 500);
        r.set("memory", "kb_per_run", f64::NAN);
        r.set("start", "p50_ms", 1.5);
        assert_eq!(
            Value::Object(r.values.clone()),
            serde_json::json!({"memory": {"runs": 500, "kb_per_run": null}, "start": {"p50_ms": 1.5}})
        );
    }
}
