"""The body of a Math-Verify worker process (kept tiny: it is imported in every worker)."""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any


def _wrap(expr: str) -> str:
    text = expr.strip()
    return text if text.startswith("$") else f"${text}$"


def compare(gold: str, prediction: str, timeout_s: int) -> bool:
    """Math-Verify equivalence, gold first (the comparison is not symmetric)."""
    from math_verify import parse, verify

    gold_parsed = parse(_wrap(gold), parsing_timeout=timeout_s)
    pred_parsed = parse(_wrap(prediction), parsing_timeout=timeout_s)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s))


def serve(conn: Connection, timeout_s: int) -> None:
    """Answer ``(job_id, gold, prediction)`` requests with ``(job_id, outcome)`` until EOF."""
    import math_verify  # noqa: F401  (import once, before announcing readiness)

    conn.send(("ready", None))
    while True:
        try:
            message: Any = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job_id, gold, prediction = message
        try:
            outcome = "correct" if compare(gold, prediction, timeout_s) else "wrong"
        except Exception:  # a Math-Verify failure is a result, not a crash of the worker
            outcome = "error"
        conn.send((job_id, outcome))
