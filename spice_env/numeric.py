"""Reading numbers written by models: thousands separators, LaTeX wrappers, units.

Shared by the task parser (is a gold answer an integer?) and the verifier (is the Reasoner's
answer that integer?), so both apply the same rules.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal


def normalize_number_text(value: str) -> str:
    """Drop thousands separators (``1,234``, ``1 234``, ``1\\,234``), ``$`` and outer spaces.

    A separator goes only between digit groups of a thousands-grouped number: one to three
    digits, not starting with 0, then groups of exactly three (``1 2`` stays two numbers, and
    ``0,111`` is no thousand-and-something).
    """
    text = value.strip().strip("$").strip()
    text = re.sub(r"\\[,;:! ]|\{,\}|~", "", text)
    text = _GROUPED.sub(lambda match: re.sub(r"[,\s'_]", "", match.group(0)), text)
    return re.sub(r"^([+-])\s+", r"\1", text)


# a thousands-grouped number: its separators may be a comma, a space, an apostrophe or "_"
_GROUPED = re.compile(r"(?<![\d.])[1-9]\d{0,2}(?:[,\s'_]\d{3})+(?!\d)")


_TEXT_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")


def strip_text_commands(value: str) -> str:
    """Replace ``\\text{x}``, ``\\mathrm{x}`` and similar wrappers by their content."""
    previous = None
    while previous != value:
        previous, value = value, _TEXT_WRAPPERS.sub(r"\1", value)
    return value


def _clean_number(value: str) -> str:
    text = strip_text_commands(value).replace("−", "-").replace("\\$", "").replace("\\%", "%")
    text = re.sub(r"\^\s*\{?\\circ\}?", "", text).strip()
    while text.startswith("{") and text.endswith("}") and _wraps_whole(text):
        text = text[1:-1].strip()  # {{8}} -> 8
    text = re.sub(r"^[A-Za-z]\w{0,2}\s*=\s*", "", text)  # x = 5 -> 5
    return normalize_number_text(text)


# what may follow a number: units ("cm", "km per hour", " m^2", "%"), never a scale or a hedge;
# a one-letter unit needs a space before it ("2.5 m"), so "2x" is not the number 2
_UNITS = re.compile(r"(?:\s*%|\s+[A-Za-z](?:\^\{?[23]\}?)?"
                    r"|\s*(?:[A-Za-z]{2,}(?:\^\{?[23]\}?)?\s*)+)?\s*\.?")
_NOT_UNITS = frozenset([
    "million", "millions", "billion", "billions", "thousand", "thousands", "hundred", "hundreds",
    "trillion", "trillions", "dozen", "dozens", "half", "or", "and", "to", "plus", "minus",
    "times", "more", "less", "than", "over", "squared", "cubed"
])


def _only_units(rest: str) -> bool:
    return bool(_UNITS.fullmatch(rest)) and not any(
        w.lower() in _NOT_UNITS for w in re.findall(r"[A-Za-z]+", rest))


_NUMBER_HEAD = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(.*)$", re.DOTALL)


def _leading_number(value: str) -> str | None:
    """The number a value starts with, when only units (letters, %, spaces) follow it."""
    match = _NUMBER_HEAD.match(_clean_number(value))
    if not match:
        return None
    number, rest = match.groups()
    return number if not rest or _only_units(rest) else None


def parse_integer(value: str) -> int | None:
    """The integer written in ``value`` (``1,234``, ``1\\,234``, ``42.0``, ``17 cm``), else None."""
    number = _leading_number(value)
    if number is None or not re.fullmatch(r"[+-]?\d+(?:\.0*)?", number):
        return None
    return _whole(number.split(".")[0])


_DIGITS_PER_STEP = 4000  # under int()'s limit on the digits of one conversion (4300)


def _whole(number: str) -> int:
    """``int(number)`` for a signed run of digits of any length."""
    digits = number.lstrip("+-")
    value = 0
    for start in range(0, len(digits), _DIGITS_PER_STEP):
        part = digits[start : start + _DIGITS_PER_STEP]
        value = value * 10 ** len(part) + int(part)
    return -value if number.startswith("-") else value


def parse_float(value: str) -> float | None:
    """The decimal number written in ``value`` (units after it allowed), else None."""
    number = _leading_number(value)
    if number is None:
        return None
    result = float(number)
    return result if math.isfinite(result) else None




_SCIENTIFIC = re.compile(
    r"([+-]?(?:\d+\.?\d*|\.\d+))\s*(?:(?:\\times|\\cdot|\*|×)\s*10\s*\^\s*\{?\s*([+-]?\d+)\s*\}?"
    r"|[eE]([+-]?\d+))")
_MAX_EXPONENT = 300  # a float holds the result


def plain_scientific(value: str) -> str:
    """A number in scientific notation (``3.54 \\times 10^{-7}``, ``3.54\\cdot10^{-7}``,
    ``3.54*10^-7``, ``3.54e-07``) written out as a plain decimal (``0.000000354``); any other
    text, or an exponent beyond ±300, is returned as it is."""
    text = value.strip().strip("$").strip()
    match = _SCIENTIFIC.fullmatch(text)
    if match is None:
        return value
    exponent = int(match.group(2) or match.group(3))
    if abs(exponent) > _MAX_EXPONENT:
        return value
    digits = Decimal(match.group(1)).scaleb(exponent)
    out = format(digits, "f")
    return out.rstrip("0").rstrip(".") if "." in out else out


_DECIMAL_COMMA = re.compile(r"[+-]?\d+,(?:\d{1,2}|\d{4,})")


def decimal_comma(value: str) -> str | None:
    """``1000,99`` read with a decimal comma (``1000.99``): one comma not followed by a group of
    exactly three digits (``1,000`` stays a thousand); None for anything else."""
    text = value.strip().strip("$").strip()
    return text.replace(",", ".") if _DECIMAL_COMMA.fullmatch(text) else None


def _wraps_whole(text: str) -> bool:
    """Whether the first ``{`` of ``text`` closes at its last character."""
    depth = 0
    for index, char in enumerate(text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return index == len(text) - 1
    return False
