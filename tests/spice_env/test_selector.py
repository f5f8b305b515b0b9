"""Tests of spice_env.selector: the task-type selector's output in both prompt styles (JSON and
tags), its reason codes, and the task format it picks."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from spice_env.game import GameConfig, SpiceGame
from spice_env.prompting import selector_prompt
from spice_env.selector import SELECTOR_REASONS, chosen_format, parse_task_type_selection
from spice_env.verify import Verifier

# --- parsing ------------------------------------------------------------------------------------


def test_selector_valid() -> None:
    raw = ('Here you go: {"suitable_for_mcq": true, "suitable_for_free_form": false, '
           '"best_answer_type": "integer", "reason": "lots of counts"}')
    result = parse_task_type_selection(raw)
    assert result.reason is None
    assert result.selection is not None
    assert result.selection.suitable_for_mcq is True
    assert result.selection.suitable_for_free_form is False
    assert result.selection.best_answer_type == "integer"
    assert result.selection.reason == "lots of counts"


@pytest.mark.parametrize(
    ("mcq", "free", "expected"),
    [("yes", "no", (True, False)), ("true", "FALSE", (True, False)),
     ("No", " Yes ", (False, True)), (False, "true", (False, True))],
)
def test_selector_string_booleans(mcq: Any, free: Any, expected: tuple[bool, bool]) -> None:
    raw = json.dumps({"suitable_for_mcq": mcq, "suitable_for_free_form": free,
                      "best_answer_type": "Expression"})
    result = parse_task_type_selection(raw)
    assert result.selection is not None
    assert (result.selection.suitable_for_mcq, result.selection.suitable_for_free_form) == expected
    assert result.selection.best_answer_type == "expression"


def test_selector_optional_fields() -> None:
    raw = '```json\n{"suitable_for_mcq": false, "suitable_for_free_form": true}\n```'
    result = parse_task_type_selection(raw)
    assert result.selection is not None
    assert result.selection.best_answer_type is None
    assert result.selection.reason == ""


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"suitable_for_mcq": true}', "missing_field"),
        ('{"suitable_for_free_form": true}', "missing_field"),
        ('{"suitable_for_mcq": "maybe", "suitable_for_free_form": true}', "missing_field"),
        ('{"suitable_for_mcq": 1, "suitable_for_free_form": 0}', "missing_field"),
        ('{"suitable_for_mcq": true, "suitable_for_free_form": true, "best_answer_type": "color"}',
         "bad_answer_type"),
        ("The document suits an MCQ.", "no_json"),
        ("", "empty"),
        ("   ", "empty"),
        (None, "empty"),
        (42, "empty"),
    ],
)
def test_selector_rejections(raw: Any, reason: str) -> None:
    result = parse_task_type_selection(raw)
    assert result.selection is None
    assert result.reason == reason
    assert result.detail


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("yes</mcq><free_form>no</free_form><answer_type>integer</answer_type>", (True, False)),
     ("<mcq>No</mcq>\n<free_form>Yes.</free_form>", (False, True)),
     ("<MCQ>yes</MCQ><FREE_FORM>yes</FREE_FORM><answer_type>string</answer_type>"
      "<reason>names</reason>", (True, True))],
)
def test_selector_tags(raw: str, expected: tuple[bool, bool]) -> None:
    result = parse_task_type_selection(raw)
    assert result.valid and result.selection is not None
    assert (result.selection.suitable_for_mcq, result.selection.suitable_for_free_form) == expected


def test_selector_tag_rejections() -> None:
    assert parse_task_type_selection("maybe</mcq><free_form>no</free_form>").reason == \
        "missing_field"
    assert parse_task_type_selection("<mcq>yes</mcq>").reason == "missing_field"
    assert parse_task_type_selection("x" * 70000).reason == "too_long"


def test_neither_format_is_an_invalid_choice() -> None:
    raw = json.dumps({"suitable_for_mcq": False, "suitable_for_free_form": "no"})
    result = parse_task_type_selection(raw)
    assert not result.valid and result.reason == "no_suitable_format"
    assert result.selection is not None  # what the selector said is kept
    assert chosen_format(result, np.random.default_rng(0)) is None


def test_chosen_format() -> None:
    rng = np.random.default_rng(0)
    only_mcq = parse_task_type_selection('{"suitable_for_mcq": true, '
                                         '"suitable_for_free_form": false}')
    only_free = parse_task_type_selection('{"suitable_for_mcq": "no", '
                                          '"suitable_for_free_form": "yes"}')
    both = parse_task_type_selection('{"suitable_for_mcq": true, "suitable_for_free_form": true}')
    assert chosen_format(only_mcq, rng) == "mcq"
    assert chosen_format(only_free, rng) == "free_form"
    picks = [chosen_format(both, rng) for _ in range(400)]
    assert 150 < picks.count("mcq") < 250 and set(picks) == {"mcq", "free_form"}
    assert chosen_format(parse_task_type_selection("nonsense"), rng) is None


@pytest.mark.parametrize("style", ["paper", "compact"])
def test_selector_prompt_in_both_styles(style: Any) -> None:
    rendered = selector_prompt("Water boils at 100 degrees Celsius at sea level.", style)
    text = rendered.messages[0]["content"]
    assert "Water boils" in text
    if style == "paper":
        assert "suitable_for_mcq" in text and rendered.assistant_prefix == ""
    else:
        assert "<free_form>" in text and rendered.assistant_prefix == "<mcq>"


def test_game_puts_the_prefill_back() -> None:
    with Verifier() as verifier:
        game = SpiceGame(GameConfig(prompt_style="compact", format_choice="selector"), verifier)
        result, task_format = game.select("no</mcq><free_form>yes</free_form>",
                                          np.random.default_rng(0))
    assert result.valid and task_format == "free_form"


def test_selector_needs_both_formats_and_a_document() -> None:
    with pytest.raises(ValueError, match="task_formats='both'"):
        GameConfig(format_choice="selector", task_formats="mcq")
    with pytest.raises(ValueError, match="grounding"):
        GameConfig(format_choice="selector", grounding=False)


def test_every_reason_is_listed() -> None:
    reasons = {parse_task_type_selection(raw).reason for raw in
               ["", "x" * 70000, "prose", '{"suitable_for_mcq": 1}',
                '{"suitable_for_mcq": true, "suitable_for_free_form": true, '
                '"best_answer_type": "colour"}',
                '{"suitable_for_mcq": false, "suitable_for_free_form": false}']}
    assert reasons == set(SELECTOR_REASONS)
