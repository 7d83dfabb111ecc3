//! A test knob: `DISPATCH_TEST_STALL=N` (or `NxK`) makes each run's task
//! block the worker's async runtime for `N` ms (`K` times, yielding to the
//! rest of the runtime in between) before the run starts, as a run doing
//! blocking work on the runtime would. The tests of lease renewal and
//! admission control use it to starve a real worker's runtime; it is not
//! for production use.

use std::time::Duration;

/// The environment variable.
pub const VAR: &str = "DISPATCH_TEST_STALL";

/// How long, and how many times, each run blocks the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    pub block: Duration,
    pub times: u32,
}

impl Stall {
    /// `N` or `NxK`: `K` blocks of `N` ms.
    pub fn parse(text: &str) -> Result<Stall, String> {
        let (block, times) = text.split_once('x').unwrap_or((text, "1"));
        match (block.trim().parse::<u64>(), times.trim().parse::<u32>()) {
            (Ok(ms), Ok(times)) if ms > 0 && times > 0 => Ok(Stall {
                block: Duration::from_millis(ms),
                times,
            }),
            _ => Err(format!(
                "{VAR}=`{text}` is not N or NxK milliseconds (hint: {VAR}=3000 blocks the \
                 worker's runtime 3 s as each run starts; {VAR}=300x1000 blocks it 1,000 times \
                 300 ms)"
            )),
        }
    }

    /// The knob as the environment sets it; `Ok(None)` when unset.
    pub fn from_env() -> Result<Option<Stall>, String> {
        match std::env::var(VAR) {
            Ok(text) if !text.is_empty() => Stall::parse(&text).map(Some),
            _ => Ok(None),
        }
    }

    /// Blocks the calling runtime's thread as configured.
    pub(super) async fn run(self) {
        for i in 0..self.times {
            if i > 0 {
                tokio::task::yield_now().await;
            }
            // Blocking on purpose: this is what the knob is for.
            std::thread::sleep(self.block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_knob_reads_n_or_n_times_k() {
        let ms = Duration::from_millis;
        assert_eq!(
            Stall::parse("3000"),
            Ok(Stall {
                block: ms(3000),
                times: 1
            })
        );
        assert_eq!(
            Stall::parse("300x1000"),
            Ok(Stall {
                block: ms(300),
                times: 1000
            })
        );
        for bad in ["", "x", "0", "1x0", "-5", "fast", "3s"] {
            let e = Stall::parse(bad).expect_err(bad);
            assert!(e.contains("hint:"), "{e}");
        }
    }
}
