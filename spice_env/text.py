"""Checks on text that comes from outside: model output, corpus files, servers."""

from __future__ import annotations


def valid_unicode(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8: no lone surrogate, which a JSON escape such
    as ``\\ud83d`` without its pair produces and which tokenizers and logs cannot take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
