//! W3C trace context for runs: the `traceparent` a run is created under,
//! and the span ids of a run's trace, derived from the run so that every
//! process (the worker that starts the agent, the one that exports the
//! trace) names the same spans without asking anyone.
//!
//! A run's trace id is the caller's (from its `traceparent`) or else the
//! run id itself (128 bits). Its span ids are the first 8 bytes of
//! SHA-256 over the run id and what the span stands for.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::RunId;

/// A parsed W3C `traceparent` (version 00): `00-<trace id>-<parent id>-<flags>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// The form a `traceparent` takes, for error messages.
pub const TRACEPARENT_FORM: &str = "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>";

impl FromStr for TraceParent {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a W3C traceparent (hint: {TRACEPARENT_FORM})");
        let parts: Vec<&str> = text.trim().split('-').collect();
        let [version, trace, parent, flags] = parts[..] else {
            return Err(bad());
        };
        let lower_hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if version != "00"
            || !lower_hex(trace, 32)
            || !lower_hex(parent, 16)
            || !lower_hex(flags, 2)
        {
            return Err(bad());
        }
        let mut out = TraceParent {
            trace_id: [0; 16],
            parent_id: [0; 8],
            flags: 0,
        };
        hex::decode_to_slice(trace, &mut out.trace_id).map_err(|_| bad())?;
        hex::decode_to_slice(parent, &mut out.parent_id).map_err(|_| bad())?;
        let mut f = [0u8; 1];
        hex::decode_to_slice(flags, &mut f).map_err(|_| bad())?;
        out.flags = f[0];
        if out.trace_id == [0; 16] || out.parent_id == [0; 8] {
            return Err(format!(
                "`{text}` has an all-zero trace or parent id, which W3C trace context forbids"
            ));
        }
        Ok(out)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

/// The span id of what `key` names in run `run`'s trace (`""`: the run's
/// own span; `attempt/2`, `event/17`: its parts). Never all zeros.
pub fn span_id(run: &RunId, key: &str) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(run.as_str().as_bytes());
    h.update(b"/");
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

/// The trace id of run `run`: its caller's (`given`, as stored), else the
/// run id's 128 bits.
pub fn trace_id(run: &RunId, given: Option<&TraceParent>) -> [u8; 16] {
    if let Some(tp) = given {
        return tp.trace_id;
    }
    let mut id = [0u8; 16];
    if hex::decode_to_slice(run.as_str(), &mut id).is_err() || id == [0; 16] {
        let digest = Sha256::digest(run.as_str().as_bytes());
        id.copy_from_slice(&digest[..16]);
    }
    id
}

/// The `TRACEPARENT` an agent of run `run` gets: the run's span in its trace
/// (sampled), so that what the agent traces joins the run's trace.
pub fn run_context(run: &RunId, given: Option<&str>) -> TraceParent {
    let given = given.and_then(|t| t.parse::<TraceParent>().ok());
    TraceParent {
        trace_id: trace_id(run, given.as_ref()),
        parent_id: span_id(run, ""),
        flags: 0x01,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIVEN: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn run() -> RunId {
        "019a0000000070008000000000000042".parse().expect("an id")
    }

    #[test]
    fn a_traceparent_round_trips() {
        let tp: TraceParent = GIVEN.parse().expect("valid");
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.to_string(), GIVEN);
    }

    #[test]
    fn bad_traceparents_are_refused_in_one_line() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-zz",
        ] {
            let e = bad.parse::<TraceParent>().expect_err(bad);
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_run_context_keeps_the_callers_trace_and_names_the_run_span() {
        let run = run();
        let mine = run_context(&run, Some(GIVEN));
        assert_eq!(
            hex::encode(mine.trace_id),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(mine.parent_id, span_id(&run, ""));
        let own = run_context(&run, None);
        assert_eq!(hex::encode(own.trace_id), run.as_str());
        assert_ne!(span_id(&run, "attempt/1"), span_id(&run, "attempt/2"));
    }
}
