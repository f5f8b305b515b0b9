"""Prompt templates: placeholders, styles, and the Reasoner never seeing the document."""

from __future__ import annotations

import pytest

from spice_env.prompting import (
    challenger_prompt,
    fill,
    plain_text,
    reasoner_prompt,
    selector_prompt,
)


def test_fill_is_verbatim_and_not_recursive() -> None:
    assert fill("a {{x}} b", x="{{y}}", y="no") == "a {{y}} b"
    assert fill("{{unknown}} {{x}}", x="1") == "{{unknown}} 1"


@pytest.mark.parametrize("style", ["paper", "compact"])
@pytest.mark.parametrize("fmt", ["mcq", "free_form"])
def test_challenger_prompt_grounding(style: str, fmt: str) -> None:
    grounded = challenger_prompt("UNIQUE-DOC-TEXT 42", fmt, style)  # type: ignore[arg-type]
    assert "UNIQUE-DOC-TEXT 42" in grounded.messages[-1]["content"]
    assert grounded.messages[-1]["role"] == "user"
    assert "[BEGINNING OF THE DOCUMENT]" in grounded.text
    ungrounded = challenger_prompt(None, fmt, style)  # type: ignore[arg-type]
    assert "[BEGINNING OF THE DOCUMENT]" not in ungrounded.text
    assert grounded.assistant_prefix == ("<question>" if style == "compact" else "")


def test_paper_prompts_ask_for_json_fields() -> None:
    mcq = challenger_prompt("doc", "mcq", "paper").text
    assert "multiple_choice_question" in mcq and "multiple_choice_correct" in mcq
    free = challenger_prompt("doc", "free_form", "paper").text
    assert '"answer_type"' in free and "integer" in free and "expression" in free


def test_reasoner_prompt_has_question_and_box_instruction() -> None:
    for style in ("paper", "compact"):
        prompt = reasoner_prompt("What is 2+2?", style)  # type: ignore[arg-type]
        assert "What is 2+2?" in prompt.text
        assert "\\boxed" in prompt.text


def test_selector_prompt() -> None:
    assert "suitable_for_mcq" in selector_prompt("some doc").text


def test_plain_text_template() -> None:
    text = plain_text(({"role": "user", "content": "hi"},), "<q>")
    assert text == "User: hi\n\nAssistant: <q>"


def test_unknown_style_and_format() -> None:
    with pytest.raises(ValueError, match="prompt style"):
        challenger_prompt("d", "mcq", "fancy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="task format"):
        challenger_prompt("d", "essay", "paper")  # type: ignore[arg-type]
