"""dispatch_agent: write Dispatch agents in Python.

Wraps the agent protocol (``docs/agent-protocol.md``): the payload and run
facts, telemetry events (usage, steps, tool calls), checkpoints, the output,
artifacts, approvals and durable waits. Standard library only.

Outside Dispatch (``$DISPATCH_EVENTS`` unset) nothing fails: events are
written to stderr, the output is printed on stdout, artifacts are dropped.
"""

from ._events import emit
from .approvals import Decision, request_approval
from .record import ToolCall, emit_usage, error, fail, log, message, step, tool, tool_call
from .run import (
    attempt,
    brief,
    fence,
    in_dispatch,
    operation,
    parcel_dir,
    payload,
    run_id,
    session_file,
    state_dir,
)
from .state import artifact, checkpoint, load_checkpoint, load_checkpoint_event, set_output
from .waits import SignalTimeout, resume_info, sleep, wait_for_signal

__version__ = "0.1.0"

__all__ = [
    "Decision",
    "SignalTimeout",
    "ToolCall",
    "artifact",
    "attempt",
    "brief",
    "checkpoint",
    "emit",
    "emit_usage",
    "error",
    "fail",
    "fence",
    "in_dispatch",
    "load_checkpoint",
    "load_checkpoint_event",
    "log",
    "message",
    "operation",
    "parcel_dir",
    "payload",
    "request_approval",
    "resume_info",
    "run_id",
    "session_file",
    "set_output",
    "sleep",
    "state_dir",
    "step",
    "tool",
    "tool_call",
    "wait_for_signal",
]
