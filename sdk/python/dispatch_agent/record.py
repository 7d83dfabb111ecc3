"""Telemetry events: usage, steps, tool calls, logs, messages and errors."""

from __future__ import annotations

import functools
import inspect
import math
import time
from types import TracebackType
from typing import Any, Callable, NoReturn, Optional, Type, TypeVar, Union, overload

from ._events import emit

F = TypeVar("F", bound=Callable[..., Any])


def emit_usage(model: str, input_tokens: int, output_tokens: int, cost_usd: float = 0.0) -> None:
    """Reports tokens and cost of one model call; Dispatch adds them to the
    run's totals and checks the run's budgets (a hard budget crossed stops
    the run).

    Raises ValueError for negative or non-integer token counts or a negative
    or non-finite cost, which Dispatch would only record as a warning.
    """
    for label, n in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{label} must be a non-negative integer, got {n!r}")
    if isinstance(cost_usd, bool) or not isinstance(cost_usd, (int, float)):
        raise ValueError(f"cost_usd must be a number, got {cost_usd!r}")
    if cost_usd < 0 or not math.isfinite(cost_usd):
        raise ValueError(f"cost_usd must be a non-negative finite number, got {cost_usd!r}")
    emit(
        "usage",
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=float(cost_usd),
    )


class step:
    """A step of the run's timeline: ``with step("fetch"): ...``.

    Writes ``{"type":"step","name":…,"phase":"start"}`` on entry and the
    ``end`` event on exit, also when the block raises (the end event then
    has an ``error`` field). The step timeout (``TIMEOUT STEP``) runs from
    the start. Also usable as a decorator: ``@step("fetch")``.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a step needs a non-empty name")
        self.name = name

    def __enter__(self) -> "step":
        emit("step", name=self.name, phase="start")
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        error = None
        if exc is not None and not isinstance(exc, (SystemExit, GeneratorExit)):
            error = _describe(exc)
        emit("step", name=self.name, phase="end", error=error)

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with step(self.name):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def tool_call(
    name: str,
    input: Any = None,
    output: Any = None,
    ok: bool = True,
    duration_ms: Optional[int] = None,
) -> None:
    """Records one tool call (listed under "Tool calls" in ``inspect-run``)."""
    emit("tool_call", name=name, input=input, output=output, ok=ok, duration_ms=duration_ms)


class ToolCall:
    """Times a tool call and records it when it ends; see :func:`tool`.

    Set ``output`` inside the block; an exception records ``ok: false`` and
    the error as the output, and is re-raised.
    """

    def __init__(self, name: str, input: Any = None) -> None:
        self.name = name
        self.input = input
        self.output: Any = None
        self.ok = True
        self._started = 0.0

    def __enter__(self) -> "ToolCall":
        self._started = time.monotonic()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if isinstance(exc, (SystemExit, GeneratorExit)):
            return
        if exc is not None:
            self.ok = False
            self.output = _describe(exc)
        elapsed = int((time.monotonic() - self._started) * 1000)
        tool_call(self.name, self.input, self.output, self.ok, elapsed)


@overload
def tool(name: F) -> F: ...
@overload
def tool(name: Optional[str] = None, input: Any = None) -> "_Tool": ...


def tool(name: Union[str, Callable[..., Any], None] = None, input: Any = None) -> Any:
    """A timed tool call, as a context manager or a decorator.

    ``with tool("search", input={"q": q}) as call: call.output = search(q)``
    records the call with its duration when the block ends.

    ``@tool`` or ``@tool("search")`` on a function records every call of it:
    the arguments by parameter name as input, the return value as output, an
    exception (re-raised) as ``ok: false``. Without a name the function's
    name is used.
    """
    if callable(name):
        return _Tool(None, None)(name)
    return _Tool(name, input)


class _Tool:
    def __init__(self, name: Optional[str], input: Any) -> None:
        self.name = name
        self.input = input
        self._call: Optional[ToolCall] = None

    def __enter__(self) -> ToolCall:
        if self.name is None:
            raise ValueError("`with tool(...)` needs a name")
        self._call = ToolCall(self.name, self.input)
        return self._call.__enter__()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        assert self._call is not None
        self._call.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        name = self.name or func.__name__
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = signature.bind(*args, **kwargs)
                arguments: Any = dict(bound.arguments)
            except TypeError:
                arguments = {"args": list(args), "kwargs": kwargs}
            with ToolCall(name, arguments) as call:
                call.output = func(*args, **kwargs)
                return call.output

        return wrapper  # type: ignore[return-value]


def log(message: str, **fields: Any) -> None:
    """Records a ``log`` event with ``message`` and any extra fields."""
    emit("log", message=message, **fields)


def message(text: str, role: str = "assistant", **fields: Any) -> None:
    """Records a ``message`` event (e.g. what the agent said)."""
    emit("message", role=role, text=text, **fields)


def error(message: str, retryable: bool = True) -> None:
    """Records an ``error`` event. If the agent then exits non-zero, ``message``
    is the run's failure reason; ``retryable=False`` means no retry."""
    emit("error", message=message, retryable=retryable)


def fail(message: str, retryable: bool = True, code: int = 1) -> NoReturn:
    """Records an ``error`` event and exits the process with ``code`` (1)."""
    error(message, retryable)
    raise SystemExit(code)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
