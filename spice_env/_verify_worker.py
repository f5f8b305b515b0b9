"""A Math-Verify worker process, run as a script by :class:`spice_env.verify.MathVerifyPool`.

It is started as ``python _verify_worker.py <timeout_s>`` (never through ``multiprocessing``, so
the parent's main module is not re-imported) and speaks JSON lines: it prints ``{"ready": true}``
once Math-Verify is imported, then answers each request ``{"id": n, "gold": ..., "pred": ...}``
with ``{"id": n, "outcome": "correct" | "wrong" | "timeout" | "error"}``; ``timeout`` means
Math-Verify stopped on its own time limit (``timeout_s`` whole seconds per step). It imports
nothing of spice-env.
"""

from __future__ import annotations

import json
import logging
import sys


def _wrap(expr: str) -> str:
    text = expr.strip().replace("**", "^")  # a Python-style power, written as LaTeX
    return text if text.startswith("$") else f"${text}$"


class MathVerifyTimeout(Exception):
    """Math-Verify stopped on its own time limit."""


def compare(gold: str, prediction: str, timeout_s: int) -> bool:
    """Math-Verify equivalence, gold first (the comparison is not symmetric).

    Only the LaTeX extraction is used (its parser builds expressions without evaluating text);
    each of the three steps (parse gold, parse prediction, verify) has the limit ``timeout_s``.
    When Math-Verify fails on the expressions (``\\frac{1}{0}`` cannot be evaluated), the answer
    gets Math-Verify's own handling of errors: the comparisons that fail count as unequal, and its
    comparison of the normalised strings still decides.
    """
    from math_verify.errors import TimeoutException

    try:
        try:
            return _math_verify(gold, prediction, timeout_s, raise_on_error=True)
        except Exception:  # not a timeout: Math-Verify's TimeoutException is a BaseException
            return _math_verify(gold, prediction, timeout_s, raise_on_error=False)
    except TimeoutException as exc:  # caught by name
        raise MathVerifyTimeout from exc


def _math_verify(gold: str, prediction: str, timeout_s: int, *, raise_on_error: bool) -> bool:
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig()]
    gold_parsed = parse(_wrap(gold), extraction_config=config, parsing_timeout=timeout_s,
                        raise_on_error=raise_on_error)
    pred_parsed = parse(_wrap(prediction), extraction_config=config, parsing_timeout=timeout_s,
                        raise_on_error=raise_on_error)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s,
                       raise_on_error=raise_on_error))


def serve(timeout_s: int) -> None:
    """Answer requests from standard input until it closes."""
    import math_verify  # noqa: F401  (import once, before announcing readiness)

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    compare("\\frac{1}{2}", "0.5", timeout_s)  # warm up the parser before taking real work
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            job, gold, prediction = request["id"], request["gold"], request["pred"]
        except (ValueError, KeyError, TypeError):
            continue
        try:
            outcome = "correct" if compare(gold, prediction, timeout_s) else "wrong"
        except MathVerifyTimeout:
            outcome = "timeout"
        except Exception:  # a Math-Verify failure is a result, not a crash of the worker
            outcome = "error"
        out.write(json.dumps({"id": job, "outcome": outcome}) + "\n")
        out.flush()


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
