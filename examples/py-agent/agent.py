"""examples/py-agent: a Dispatch agent in Python, written with the SDK.

The payload chooses what it does:
  {"topic": "rust"}             research, write summary.md, output the summary
  {"topic": "rust", "ask": true} also ask for approval `publish` and wait for it
  {"fail_first": true}           fail attempt 1 after the research checkpoint;
                                 attempt 2 resumes from it without searching again
  {"review": true}               wait durably for signal `review` (the process
                                 exits; `dispatch signal RUN review --value '"ok"'`
                                 resumes it in the next attempt)
Run it by hand too: echo '{"topic":"rust"}' | python3 examples/py-agent/agent.py
"""

import os
import sys

try:
    import dispatch_agent as da
except ImportError:
    # Run by hand from a checkout: use the SDK next to it. Under Dispatch the
    # parcel is a copy, so install the SDK (pip install ./sdk/python) or set
    # PYTHONPATH to sdk/python.
    here = os.path.dirname(os.path.abspath(__file__))
    sdk = os.path.join(here, "..", "..", "sdk", "python")
    if not os.path.isdir(os.path.join(sdk, "dispatch_agent")):
        sys.exit("py-agent: the SDK is missing: pip install ./sdk/python (or set PYTHONPATH to sdk/python)")
    sys.path.insert(0, sdk)
    import dispatch_agent as da

FACTS = {
    "rust": ["Rust has no garbage collector.", "Cargo builds and tests Rust code."],
    "python": ["Python was first released in 1991.", "Python has a large standard library."],
}


@da.tool("search")
def search(query: str) -> list:
    """A stand-in for a real search tool."""
    return FACTS.get(query.lower(), [f"Nothing much is known about {query}."])


def research(topic: str) -> list:
    with da.step("research"):
        facts = search(topic)
        da.emit_usage("demo-model", input_tokens=400, output_tokens=60, cost_usd=0.002)
        da.checkpoint({"facts": facts}, step="research")
    return facts


def main() -> None:
    job = da.payload() or {}
    topic = job.get("topic", "rust")
    print(f"py-agent: run {da.run_id()}, attempt {da.attempt()}, topic {topic}", flush=True)

    saved = da.load_checkpoint()
    if saved:
        print("py-agent: resuming from the checkpoint, no new search", flush=True)
        facts = saved["facts"]
    else:
        facts = research(topic)
    if job.get("fail_first") and da.attempt() == 1:
        da.fail("the first attempt fails on purpose")

    with da.step("write"):
        summary = f"# {topic}\n\n" + "".join(f"- {f}\n" for f in facts)
        da.emit_usage("demo-model", input_tokens=200, output_tokens=120, cost_usd=0.001)
        da.artifact("summary.md", summary)

    result = {"topic": topic, "facts": len(facts), "attempt": da.attempt()}
    if job.get("review"):
        result["review"] = da.wait_for_signal("review", timeout_s=3600)
    if job.get("ask"):
        decision = da.request_approval("publish", f"Publish the summary of {topic}?", timeout_s=3600)
        result["published"] = decision.approved
        result["decided_by"] = decision.by
        print(f"py-agent: publish {'approved' if decision.approved else 'denied'} by {decision.by}", flush=True)
    da.set_output(result)


if __name__ == "__main__":
    main()
