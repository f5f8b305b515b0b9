"""Checks on text that comes from outside: model output, corpus files, servers."""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_unicode(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8: no lone surrogate, which a JSON escape such
    as ``\\ud83d`` without its pair produces and which tokenizers and logs cannot take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def writable(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, so that it can be written as
    UTF-8 (a name or label kept from outside; content with one is refused instead)."""
    return text if valid_unicode(text) else _SURROGATE.sub("\ufffd", text)


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` whose every failure is a ``ValueError``: besides malformed JSON, a number
    of more digits than ``int()`` reads (4300) and nesting deeper than the recursion limit.

    Raises:
        ValueError: the text is not JSON this process can read (``json.JSONDecodeError`` for
            malformed JSON, whose ``msg`` says why).
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError:
        raise
    except ValueError as error:
        reason = "a number of more digits than can be read" if "digits" in str(error) else \
            str(error).splitlines()[0][:200] if str(error) else "not readable"
        raise ValueError(reason) from None
