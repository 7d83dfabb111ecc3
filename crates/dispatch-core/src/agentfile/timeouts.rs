//! The `TIMEOUT` and `LIMIT` lines: run, step, model, tool and workflow
//! timeouts; token and cost budgets; the native agent's and the tools' limits.

use super::lex::{expected, positive};
use super::{Parser, duration_ms, model, tool};

impl Parser {
    pub(super) fn timeout(
        &mut self,
        line: usize,
        rest: &str,
        args: &[String],
    ) -> Result<(), String> {
        let (key, d) = match args {
            [d] => ("TIMEOUT RUN", d),
            [w, d] if w.eq_ignore_ascii_case("run") => ("TIMEOUT RUN", d),
            [w, d] if w.eq_ignore_ascii_case("step") => ("TIMEOUT STEP", d),
            [w, d] if w.eq_ignore_ascii_case("llm") => ("TIMEOUT LLM", d),
            [w, d] if w.eq_ignore_ascii_case("agent") => ("TIMEOUT AGENT", d),
            [w, d] if w.eq_ignore_ascii_case("tool") => ("TIMEOUT TOOL", d),
            _ => return Err(expected("TIMEOUT", rest)),
        };
        self.once(key, line)?;
        if key == "TIMEOUT AGENT" {
            return self.workflow.timeout(line, d);
        }
        let ms = duration_ms(d)?;
        if ms == 0 {
            return Err(format!("{key} must be greater than zero"));
        }
        if key == "TIMEOUT LLM" {
            self.agent_lines.push((line, "TIMEOUT LLM"));
            self.agent().llm_timeout_ms = Some(ms);
            return Ok(());
        }
        if key == "TIMEOUT TOOL" {
            self.agent_lines.push((line, "TIMEOUT TOOL"));
            self.agent().tool_timeout_ms = Some(ms);
            return Ok(());
        }
        let t = &mut self.af.manifest.timeouts;
        let slot = if key == "TIMEOUT RUN" {
            &mut t.run_ms
        } else {
            &mut t.step_ms
        };
        *slot = Some(ms);
        Ok(())
    }

    pub(super) fn limit(&mut self, line: usize, rest: &str, args: &[String]) -> Result<(), String> {
        if let [k, v] = args
            && k.eq_ignore_ascii_case("hops")
        {
            self.once("LIMIT HOPS", line)?;
            return self.workflow.hops(line, v);
        }
        if let [k, v] = args
            && let Some(parsed) = tool::tool_limit(&k.to_ascii_uppercase(), v)
        {
            let (key, n) = parsed?;
            self.once(key, line)?;
            self.agent_lines.push((line, key));
            let a = self.agent();
            match key {
                "LIMIT TOOL_CALLS" => a.max_tool_calls = Some(n),
                _ => a.max_tool_output_bytes = Some(n),
            }
            return Ok(());
        }
        if let [k, _, flag] = args
            && k.eq_ignore_ascii_case("OUTPUT_TOKENS")
        {
            model::allow_truncation(flag)?;
            self.agent().allow_truncation = true;
            return self.limit(line, rest, &args[..2]);
        }
        if let [k, v] = args
            && let Some(parsed) = model::agent_limit(&k.to_ascii_uppercase(), v)
        {
            let (key, n) = parsed?;
            self.once(key, line)?;
            self.agent_lines.push((line, key));
            let a = self.agent();
            match key {
                "LIMIT TOOL_ROUNDS" => a.max_tool_rounds = Some(n),
                "LIMIT ITERATIONS" => a.max_iterations = Some(n),
                "LIMIT OUTPUT_TOKENS" => a.max_output_tokens = Some(n),
                "LIMIT FUEL" => a.max_fuel = Some(n),
                _ => a.max_context_tokens = Some(n),
            }
            return Ok(());
        }
        let (kind, value, soft) = match args {
            [k, v] => (k.to_ascii_uppercase(), v, false),
            [k, v, s] if s.eq_ignore_ascii_case("soft") => (k.to_ascii_uppercase(), v, true),
            _ => return Err(expected("LIMIT", rest)),
        };
        let usd = || {
            let v = value.strip_prefix('$').unwrap_or(value).parse::<f64>().ok();
            v.filter(|v| v.is_finite() && *v > 0.0).ok_or_else(|| {
                format!("LIMIT COST must be an amount of US dollars greater than zero, got `{value}` (hint: `LIMIT COST 2.50`)")
            })
        };
        let key = match (kind.as_str(), soft) {
            ("TOKENS", false) => "LIMIT TOKENS",
            ("TOKENS", true) => "LIMIT TOKENS SOFT",
            ("COST", false) => "LIMIT COST",
            ("COST", true) => "LIMIT COST SOFT",
            _ => return Err(expected("LIMIT", rest)),
        };
        self.once(key, line)?;
        let l = &mut self.af.manifest.limits;
        match key {
            "LIMIT TOKENS" => l.max_tokens = Some(positive(value, "LIMIT TOKENS")?),
            "LIMIT TOKENS SOFT" => l.soft_max_tokens = Some(positive(value, "LIMIT TOKENS")?),
            "LIMIT COST" => l.max_cost_usd = Some(usd()?),
            _ => l.soft_max_cost_usd = Some(usd()?),
        }
        Ok(())
    }
}
