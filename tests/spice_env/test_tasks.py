"""Tests of spice_env.tasks: the Challenger output parser (JSON and tag formats), the validity
rules with their reason codes and MCQ option splitting."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spice_env.payload import find_json_object
from spice_env.selector import SELECTOR_REASONS, parse_task_type_selection
from spice_env.tasks import (
    REASONS,
    ParseResult,
    Task,
    check_answer_type,
    expression_is_wellformed,
    parse_challenger_output,
    refers_to_document,
    split_inline_options,
)

MCQ_Q = "Which city is the capital of the United Kingdom?"
OPTS = "A) Paris B) London C) Rome D) Berlin"
OPTIONS = {"A": "Paris", "B": "London", "C": "Rome", "D": "Berlin"}


def mcq_json(question: str = f"{MCQ_Q} {OPTS}", correct: Any = "B", **extra: Any) -> str:
    return json.dumps({"multiple_choice_question": question, "multiple_choice_correct": correct,
                       **extra})


def ff_json(question: Any = "How many sides does a hexagon have?", answer: Any = "6",
            answer_type: Any = "integer", **extra: Any) -> str:
    payload = {"question": question, "answer": answer, **extra}
    if answer_type is not None:
        payload["answer_type"] = answer_type
    return json.dumps(payload)


def valid(result: ParseResult) -> Task:
    assert result.reason is None, (result.reason, result.detail)
    assert result.valid and result.task is not None
    return result.task


# --- the paper's JSON format ------------------------------------------------------------------


def test_mcq_json_with_inline_options() -> None:
    raw = mcq_json(identified_answer="London", hardening_process="combined two facts",
                   question_difficulty="medium", self_test_solution="London is the capital")
    result = parse_challenger_output(raw, document_id="doc-1")
    task = valid(result)
    assert task.kind == "mcq"
    assert task.question == MCQ_Q
    assert task.options == OPTIONS
    assert task.answer == "B"
    assert task.answer_type == "mcq_letter"
    assert task.document_id == "doc-1"
    assert task.raw == raw
    assert task.metadata == {
        "identified_answer": "London", "hardening_process": "combined two facts",
        "question_difficulty": "medium", "self_test_solution": "London is the capital",
    }


@pytest.mark.parametrize(
    "question",
    [
        f"{MCQ_Q} A) Paris B) London C) Rome D) Berlin",
        f"{MCQ_Q}\nA) Paris\nB) London\nC) Rome\nD) Berlin",
        f"{MCQ_Q} (A) Paris (B) London (C) Rome (D) Berlin",
        f"{MCQ_Q}\n(A) Paris\n(B) London\n(C) Rome\n(D) Berlin",
        f"{MCQ_Q} A. Paris B. London C. Rome D. Berlin",
        f"{MCQ_Q}\nA. Paris\nB. London\nC. Rome\nD. Berlin",
        f"{MCQ_Q} A: Paris B: London C: Rome D: Berlin",
        f"{MCQ_Q}\nA: Paris\nB: London\nC: Rome\nD: Berlin",
    ],
    ids=["A)", "A)-lines", "(A)", "(A)-lines", "A.", "A.-lines", "A:", "A:-lines"],
)
def test_option_marker_styles(question: str) -> None:
    task = valid(parse_challenger_output(mcq_json(question)))
    assert task.question == MCQ_Q
    assert task.options == OPTIONS
    stem, options = split_inline_options(question)
    assert (stem, options) == (MCQ_Q, OPTIONS)


def test_split_inline_options_without_options_returns_the_text() -> None:
    assert split_inline_options("  Just a question?  ") == ("Just a question?", {})
    # markers that are not A, B, C, D in a row are not options
    assert split_inline_options("Pick A) x B) y C) z")[1] == {}
    assert split_inline_options("Pick A) x C) y B) z D) w")[1] == {}


def test_split_inline_options_ignores_letters_inside_words() -> None:
    stem, options = split_inline_options(
        "Is U.S.A. in NATO? A) yes B) no C) only partly D) unknown")
    assert stem == "Is U.S.A. in NATO?"
    assert options == {"A": "yes", "B": "no", "C": "only partly", "D": "unknown"}


@pytest.mark.parametrize("letter", ["B", "b", "(B)", "B)", "B.", " B ", "(b)", "B:"])
def test_mcq_letter_forms(letter: str) -> None:
    assert valid(parse_challenger_output(mcq_json(correct=letter))).answer == "B"


@pytest.mark.parametrize(
    "options",
    [
        {"A": "Paris", "B": "London", "C": "Rome", "D": "Berlin"},
        {"(a)": "Paris", "b": "London", "C": "Rome", "D": "Berlin"},
        ["Paris", "London", "Rome", "Berlin"],
        ["A) Paris", "B) London", "C) Rome", "D) Berlin"],
        "A) Paris\nB) London\nC) Rome\nD) Berlin",
    ],
    ids=["dict", "dict-odd-keys", "list", "list-lettered", "string"],
)
def test_mcq_with_separate_options_field(options: Any) -> None:
    raw = json.dumps({"multiple_choice_question": MCQ_Q, "options": options,
                      "multiple_choice_correct": "B"})
    task = valid(parse_challenger_output(raw))
    assert task.question == MCQ_Q
    assert task.options == OPTIONS


def test_mcq_detected_from_question_and_letter_answer() -> None:
    raw = json.dumps({"question": f"{MCQ_Q} {OPTS}", "answer": "C"})
    task = valid(parse_challenger_output(raw))
    assert (task.kind, task.answer, task.options) == ("mcq", "C", OPTIONS)


@pytest.mark.parametrize(
    ("answer", "answer_type", "expected"),
    [
        ("6", "integer", "6"),
        (6, "integer", "6"),
        ("1,234", "integer", "1,234"),
        ("-12", "integer", "-12"),
        ("42.0", "integer", "42.0"),
        ("3.25", "float", "3.25"),
        (3.25, "float", "3.25"),
        ("1e-3", "float", "1e-3"),
        ("\\frac{1}{2}", "expression", "\\frac{1}{2}"),
        ("x^2 + 2x + 1", "expression", "x^2 + 2x + 1"),
        ("$2\\sqrt{2}$", "expression", "$2\\sqrt{2}$"),
        ("Krebs cycle", "string", "Krebs cycle"),
        ("the Krebs cycle", "string", "the Krebs cycle"),
        ("yes", "boolean", "yes"),
        ("False", "boolean", "False"),
        (True, "boolean", "true"),
        ("  7  ", "INTEGER", "7"),
    ],
)
def test_free_form_json(answer: Any, answer_type: str, expected: str) -> None:
    task = valid(parse_challenger_output(ff_json(answer=answer, answer_type=answer_type)))
    assert task.kind == "free_form"
    assert task.options is None
    assert task.answer == expected
    assert task.answer_type == answer_type.lower()
    assert task.question == "How many sides does a hexagon have?"


def test_free_form_without_answer_type_is_a_string() -> None:
    task = valid(parse_challenger_output(ff_json(answer="Paris", answer_type=None)))
    assert task.answer_type == "string"


def test_free_form_metadata_fields_are_kept() -> None:
    raw = ff_json(identified_information=["a", "b"], relevant_quotes=["q"],
                  step_by_step_solution="count them", difficulty_level=3, unrelated="dropped")
    task = valid(parse_challenger_output(raw))
    assert task.metadata == {"identified_information": ["a", "b"], "relevant_quotes": ["q"],
                             "step_by_step_solution": "count them", "difficulty_level": 3}


@pytest.mark.parametrize(
    "wrap",
    [
        "```json\n{}\n```",
        "```JSON\n{}```",
        "```\n{}\n```",
        "Here is my question:\n```json\n{}\n```\nI hope it is hard enough.",
        "Sure! {} That is all.",
        "Thinking... {{not json}} and then {}",
        '{{"note": "a preamble object"}}\n{}',
    ],
)
def test_json_in_fences_and_with_text_around(wrap: str) -> None:
    raw = wrap.replace("{}", ff_json()) if "{{" not in wrap else (
        wrap.replace("{{", "{").replace("}}", "}").replace("{}", ff_json()))
    task = valid(parse_challenger_output(raw))
    assert (task.question, task.answer, task.answer_type) == (
        "How many sides does a hexagon have?", "6", "integer")


def test_find_json_object_prefers_the_required_keys() -> None:
    text = '{"a": 1} then {"suitable_for_mcq": true}'
    assert find_json_object(text, required=("suitable_for_mcq",)) == {"suitable_for_mcq": True}
    assert find_json_object(text) == {"a": 1}
    assert find_json_object("no braces") is None
    assert find_json_object("{broken") is None


# --- the tag format ---------------------------------------------------------------------------


def test_tags_free_form() -> None:
    raw = ("<question>How many legs do three spiders have in total?</question>\n"
           "<answer>24</answer>\n<answer_type>integer</answer_type>")
    task = valid(parse_challenger_output(raw))
    assert (task.kind, task.question, task.answer, task.answer_type) == (
        "free_form", "How many legs do three spiders have in total?", "24", "integer")


def test_tags_without_answer_type_are_strings_and_can_be_constrained() -> None:
    raw = "<question>What is the chemical symbol of gold?</question><answer> Au </answer>"
    task = valid(parse_challenger_output(raw))
    assert (task.answer, task.answer_type) == ("Au", "string")
    task = valid(parse_challenger_output("<question>2+2?</question><answer>4</answer>",
                                         answer_type="integer"))
    assert task.answer_type == "integer"


def test_tags_are_case_insensitive_and_multiline() -> None:
    raw = "<QUESTION>\nLine one\nline two?\n</QUESTION><Answer>\n12\n</Answer>"
    task = valid(parse_challenger_output(raw, answer_type="integer"))
    assert task.question == "Line one\nline two?"
    assert task.answer == "12"


def test_tags_with_implicit_opening_question_tag() -> None:
    # the prompt ends with "<question>", so the model's output starts inside it
    raw = " What is 6 times 7?</question>\n<answer>42</answer><answer_type>integer</answer_type>"
    task = valid(parse_challenger_output(raw))
    assert (task.question, task.answer, task.answer_type) == ("What is 6 times 7?", "42",
                                                               "integer")


def test_tags_mcq_inline_options() -> None:
    raw = f"<question>{MCQ_Q}\nA) Paris\nB) London\nC) Rome\nD) Berlin</question><answer>B</answer>"
    task = valid(parse_challenger_output(raw))
    assert (task.kind, task.question, task.options, task.answer) == ("mcq", MCQ_Q, OPTIONS, "B")
    assert valid(parse_challenger_output(raw, kind="mcq")).options == OPTIONS


def test_tags_mcq_options_tag() -> None:
    raw = (f"<question>{MCQ_Q}</question>\n<options>\nA) Paris\nB) London\nC) Rome\nD) Berlin\n"
           "</options>\n<answer>(D)</answer>")
    task = valid(parse_challenger_output(raw, kind="mcq"))
    assert (task.question, task.options, task.answer) == (MCQ_Q, OPTIONS, "D")


def test_tags_mcq_with_implicit_opening_tag() -> None:
    raw = f"{MCQ_Q} {OPTS}</question><answer>A</answer>"
    task = valid(parse_challenger_output(raw, kind="mcq"))
    assert (task.question, task.options, task.answer) == (MCQ_Q, OPTIONS, "A")


# --- constraints: kind= and answer_type= --------------------------------------------------------


def test_kind_constraint() -> None:
    assert parse_challenger_output(ff_json(), kind="mcq").reason == "wrong_kind"
    assert parse_challenger_output(mcq_json(), kind="free_form").reason == "wrong_kind"
    assert valid(parse_challenger_output(mcq_json(), kind="mcq")).kind == "mcq"
    assert valid(parse_challenger_output(ff_json(), kind="free_form")).kind == "free_form"


def test_answer_type_constraint() -> None:
    result = parse_challenger_output(ff_json(answer="six", answer_type="string"),
                                     answer_type="integer")
    assert result.reason == "wrong_answer_type"
    task = valid(parse_challenger_output(ff_json(answer_type=None), answer_type="integer"))
    assert task.answer_type == "integer"
    result = parse_challenger_output(ff_json(answer="many", answer_type=None),
                                     answer_type="integer")
    assert result.reason == "type_mismatch"
    assert valid(parse_challenger_output(ff_json(answer_type="Integer"),
                                         answer_type="integer")).answer == "6"


# --- every reason code ---------------------------------------------------------------------------

LONG_Q = "How many? " + "very " * 900
REASON_CASES: list[tuple[str, Any, dict[str, Any], str]] = [
    ("empty-string", "", {}, "empty"),
    ("empty-whitespace", "  \n\t ", {}, "empty"),
    ("no-json-prose", "I could not think of a question.", {}, "no_json"),
    ("bad-json-broken", '{"question": "What?", "answer": ', {}, "bad_json"),
    ("no-json-array", '["question", "answer"]', {}, "no_json"),
    ("missing-everything", '{"foo": 1}', {}, "missing_field"),
    ("missing-question", '{"answer": "4"}', {}, "missing_field"),
    ("missing-answer", '{"question": "What is 2+2?"}', {}, "missing_field"),
    ("null-answer", '{"question": "What is 2+2?", "answer": null}', {}, "missing_field"),
    ("empty-question", ff_json(question="  "), {}, "missing_field"),
    ("empty-answer", ff_json(answer=" "), {}, "missing_field"),
    ("mcq-missing-letter", json.dumps({"multiple_choice_question": f"{MCQ_Q} {OPTS}"}),
     {"kind": "mcq"}, "missing_field"),
    ("mcq-stem-empty", mcq_json(OPTS), {}, "missing_field"),
    ("tags-no-answer", "<question>What is 2+2?</question>", {}, "missing_field"),
    ("tags-no-question", "<answer>4</answer>", {}, "missing_field"),
    ("question-int", ff_json(question=5), {}, "question_not_string"),
    ("question-list", ff_json(question=["What", "is", "it?"]), {}, "question_not_string"),
    ("mcq-question-dict", mcq_json({"text": MCQ_Q}), {}, "question_not_string"),
    ("kind-mcq-got-free", ff_json(), {"kind": "mcq"}, "wrong_kind"),
    ("kind-free-got-mcq", mcq_json(), {"kind": "free_form"}, "wrong_kind"),
    ("bad-letter-E", mcq_json(correct="E"), {}, "bad_letter"),
    ("bad-letter-word", mcq_json(correct="London"), {}, "bad_letter"),
    ("bad-letter-empty", mcq_json(correct=""), {}, "bad_letter"),
    ("bad-letter-number", mcq_json(correct=2), {}, "bad_letter"),
    ("three-options", mcq_json(f"{MCQ_Q} A) Paris B) London C) Rome"), {}, "not_four_options"),
    ("no-options", mcq_json(MCQ_Q), {"kind": "mcq"}, "not_four_options"),
    ("empty-option", mcq_json(f"{MCQ_Q} A) Paris B) London C) Rome D) "), {}, "not_four_options"),
    ("five-options-list", json.dumps({"multiple_choice_question": MCQ_Q, "options": [
        "Paris", "London", "Rome", "Berlin", "Madrid"], "multiple_choice_correct": "B"}), {},
     "not_four_options"),
    ("options-dict-E", json.dumps({"multiple_choice_question": MCQ_Q, "options": {
        "A": "Paris", "B": "London", "C": "Rome", "E": "Berlin"}, "multiple_choice_correct": "B"}),
     {}, "not_four_options"),
    ("duplicate-options", mcq_json(f"{MCQ_Q} A) Paris B) London C) paris D) Berlin"), {},
     "duplicate_options"),
    ("answer-list", ff_json(answer=[1, 2]), {}, "answer_not_scalar"),
    ("answer-dict", ff_json(answer={"value": 6}), {}, "answer_not_scalar"),
    ("mcq-letter-list", mcq_json(correct=["B"]), {}, "answer_not_scalar"),
    ("bad-answer-type", ff_json(answer_type="colour"), {}, "bad_answer_type"),
    ("bad-answer-type-float-word", ff_json(answer_type="number"), {"answer_type": "integer"},
     "bad_answer_type"),
    ("declared-mcq-letter-as-free-form", ff_json(answer_type="mcq_letter"), {"kind": "free_form"},
     "wrong_kind"),
    ("wrong-answer-type", ff_json(answer="six", answer_type="string"),
     {"answer_type": "integer"}, "wrong_answer_type"),
    ("integer-many", ff_json(answer="many", answer_type="integer"), {}, "type_mismatch"),
    ("integer-decimal", ff_json(answer="6.5", answer_type="integer"), {}, "type_mismatch"),
    ("float-abc", ff_json(answer="abc", answer_type="float"), {}, "type_mismatch"),
    ("boolean-maybe", ff_json(answer="maybe", answer_type="boolean"), {}, "type_mismatch"),
    ("expression-prose", ff_json(answer="the sum of all the numbers here",
                                 answer_type="expression"), {}, "type_mismatch"),
    ("expression-unbalanced", ff_json(answer="\\frac{1}{2", answer_type="expression"), {},
     "type_mismatch"),
    ("expression-no-symbols", ff_json(answer="+-*/", answer_type="expression"), {},
     "type_mismatch"),
    ("string-4-words", ff_json(answer="one two three four", answer_type="string"), {},
     "string_too_long"),
    ("string-default-type", ff_json(answer="a rather long answer here", answer_type=None), {},
     "string_too_long"),
    ("refers-passage", ff_json(question="In the passage, how many sides are named?"), {},
     "refers_to_document"),
    ("refers-text", ff_json(question="What number does the text give for the sides?"), {},
     "refers_to_document"),
    ("refers-this-document", ff_json(question="How many sides does this document list?"), {},
     "refers_to_document"),
    ("refers-article", ff_json(question="According to the article, how many sides?"), {},
     "refers_to_document"),
    ("refers-mcq", mcq_json(f"Based on the given passage, which city? {OPTS}"), {},
     "refers_to_document"),
    ("refers-tags", "<question>What does the document say?</question><answer>6</answer>", {},
     "refers_to_document"),
    ("too-long-question", ff_json(question=LONG_Q), {}, "too_long"),
    ("too-long-answer", ff_json(answer="9" * 301), {}, "too_long"),
    ("too-long-mcq", mcq_json(f"{LONG_Q} {OPTS}"), {}, "too_long"),
    ("lone-surrogate", '{"question": "What is 6*7 \\ud83d?", "answer": "42"}', {},
     "bad_unicode"),
    ("nan-answer", '{"question": "How big?", "answer": NaN}', {}, "answer_not_finite"),
    ("dot-answer", ff_json(answer="."), {}, "answer_no_content"),
]


@pytest.mark.parametrize(("raw", "kwargs", "reason"), [c[1:] for c in REASON_CASES],
                         ids=[c[0] for c in REASON_CASES])
def test_reason_codes(raw: Any, kwargs: dict[str, Any], reason: str) -> None:
    result = parse_challenger_output(raw, **kwargs)
    assert result.task is None
    assert not result.valid
    assert result.reason == reason, result.detail
    assert result.detail  # a human-readable explanation comes with every reason


def test_every_reason_code_is_reachable() -> None:
    produced = {parse_challenger_output(raw, **kwargs).reason for _, raw, kwargs, _ in REASON_CASES}
    assert produced == set(REASONS)
    assert {c[3] for c in REASON_CASES} == set(REASONS)


@pytest.mark.parametrize("raw", [None, 5, 3.5, b"bytes", b"", ["a"], {"question": "q"}, object()])
def test_non_string_input_is_empty_and_never_raises(raw: Any) -> None:
    result = parse_challenger_output(raw)
    assert result.reason == "empty"
    assert result.task is None


@pytest.mark.parametrize(
    "raw",
    [
        mcq_json(f"{MCQ_Q} A) Paris B) London C) Rome D) Berlin E) Madrid"),
        f"<question>{MCQ_Q}</question><options>A) Paris\nB) London\nC) Rome\nD) Berlin\n"
        "E) Madrid</options><answer>B</answer>",
    ],
    ids=["json-inline", "options-tag"],
)
def test_five_inline_options_are_rejected(raw: str) -> None:
    assert parse_challenger_output(raw).reason == "not_four_options"


def test_huge_json_integer_does_not_raise() -> None:
    raw = '{"question": "How many?", "answer": ' + "7" * 5000 + "}"
    result = parse_challenger_output(raw)
    assert result.reason in REASONS
    selector = parse_task_type_selection('{"suitable_for_mcq": ' + "1" * 5000 + "}")
    assert selector.selection is None


# --- helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "refers"),
    [
        ("According to the article, what is x?", True),
        ("What does the passage claim?", True),
        ("What is said in the text?", True),
        ("What does this document describe?", True),
        ("In the provided excerpt, who wins?", True),
        ("Using the context above, compute y.", True),
        ("What is the integral of x^2 from 0 to 1?", False),
        ("Which textbook author proved the theorem?", False),
        ("How many documents did the clerk file if she filed 3 per hour for 4 hours?", False),
    ],
)
def test_refers_to_document(question: str, refers: bool) -> None:
    assert refers_to_document(question) is refers


@pytest.mark.parametrize(
    ("answer", "answer_type", "problem"),
    [
        ("12", "integer", None), ("1 234", "integer", None), ("$5$", "integer", None),
        ("twelve", "integer", "type_mismatch"), ("0.25", "float", None),
        ("-.5", "float", None), ("1/4", "float", "type_mismatch"), ("no", "boolean", None),
        ("True.", "boolean", None), ("perhaps", "boolean", "type_mismatch"),
        ("three word answer", "string", None), ("a four word answer", "string",
                                                "string_too_long"),
        ("\\sqrt{2}+1", "expression", None), ("(a+b", "expression", "type_mismatch"),
        ("x", "colour", "bad_answer_type"),
    ],
)
def test_check_answer_type(answer: str, answer_type: str, problem: str | None) -> None:
    assert check_answer_type(answer, answer_type) == problem


def test_expression_check_evaluates_nothing() -> None:
    assert not expression_is_wellformed("__import__('os')")  # prose words: rejected unread
    assert not expression_is_wellformed("x" * 400)
    assert not expression_is_wellformed("")


def test_reasoner_question_puts_options_inline() -> None:
    task = valid(parse_challenger_output(mcq_json()))
    assert task.reasoner_question() == (
        f"{MCQ_Q}\nA) Paris\nB) London\nC) Rome\nD) Berlin")
    free = valid(parse_challenger_output(ff_json()))
    assert free.reasoner_question() == "How many sides does a hexagon have?"


def test_tasks_are_frozen() -> None:
    task = valid(parse_challenger_output(ff_json()))
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError
        task.answer = "7"  # type: ignore[misc]


# --- fuzzing --------------------------------------------------------------------------------------

FRAGMENTS = [
    "{", "}", "[", "]", ":", ",", '"', "\\", "\n", " ", "null", "true", "1e999", "-0", "NaN",
    '"question"', '"answer"', '"answer_type"', '"options"', '"multiple_choice_question"',
    '"multiple_choice_correct"', '"integer"', '"expression"', '"string"', '"boolean"',
    "<question>", "</question>", "<answer>", "</answer>", "<options>", "</options>",
    "<answer_type>", "</answer_type>", "```json\n", "```", "A) ", "B) ", "C) ", "D) ", "E) ",
    "(A) ", "A. ", "A: ", "the passage", "\\boxed{", "é", "\u200b", "🙂",
]
structured_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=40
).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["question", "answer", "answer_type", "options", "x",
                         "multiple_choice_question", "multiple_choice_correct"]),
        children, max_size=5),
    max_leaves=12,
)
json_text = st.tuples(st.text(max_size=10), json_values, st.text(max_size=10)).map(
    lambda t: t[0] + json.dumps(t[1]) + t[2])
kinds = st.sampled_from([None, "mcq", "free_form"])
answer_types = st.sampled_from([None, "integer", "float", "expression", "string", "boolean"])
FUZZ = settings(max_examples=250, deadline=1000, suppress_health_check=[HealthCheck.too_slow])


def _check_result(result: ParseResult) -> None:
    assert isinstance(result, ParseResult)
    if result.task is None:
        assert result.reason in REASONS
    else:
        assert result.reason is None
        task = result.task
        assert task.question.strip() == task.question and task.question
        assert not refers_to_document(task.question)
        if task.kind == "mcq":
            assert task.options is not None and sorted(task.options) == ["A", "B", "C", "D"]
            assert task.answer in ("A", "B", "C", "D")
        else:
            assert check_answer_type(task.answer, task.answer_type) is None


@FUZZ
@given(st.text(), kinds, answer_types)
def test_fuzz_arbitrary_text(raw: str, kind: Any, answer_type: Any) -> None:
    _check_result(parse_challenger_output(raw, kind=kind, answer_type=answer_type))
    selection = parse_task_type_selection(raw)
    assert selection.valid == (selection.reason is None)
    assert selection.reason is None or selection.reason in SELECTOR_REASONS


@FUZZ
@given(structured_text, kinds, answer_types)
def test_fuzz_structured_fragments(raw: str, kind: Any, answer_type: Any) -> None:
    _check_result(parse_challenger_output(raw, kind=kind, answer_type=answer_type))
    selection = parse_task_type_selection(raw)
    assert selection.valid == (selection.reason is None)
    assert selection.reason is None or selection.reason in SELECTOR_REASONS


@FUZZ
@given(json_text, kinds, answer_types)
def test_fuzz_json_payloads(raw: str, kind: Any, answer_type: Any) -> None:
    _check_result(parse_challenger_output(raw, kind=kind, answer_type=answer_type))


def test_unescaped_latex_in_json_is_repaired() -> None:
    raw = ('{"question": "Compute \\frac{3}{4} \\times 8 and \\sqrt{16}.", '
           '"answer": "\\frac{9}{2}", "answer_type": "expression"}')
    task = valid(parse_challenger_output(raw))
    assert task.answer == "\\frac{9}{2}"
    assert "\\times" in task.question and "\\sqrt{16}" in task.question
    # properly escaped JSON and real escapes are untouched
    proper = json.dumps({"question": "Line one\nA \\beta question", "answer": "\\nu",
                         "answer_type": "expression"})
    task = valid(parse_challenger_output(proper))
    assert task.question == "Line one\nA \\beta question" and task.answer == "\\nu"


@pytest.mark.parametrize(("question", "refers"), [
    ("In the context of thermodynamics, how many laws are there?", False),
    ("Which key quits the text editor Vim?", False),
    ("How many amendments does this article of the constitution allow?", False),
    ("According to the author, how many?", True),
    ("Based on the information given, how many?", True),
    ("In the study described, how many patients?", True),
    ("What value was mentioned above?", True),
])
def test_document_references(question: str, refers: bool) -> None:
    result = parse_challenger_output(ff_json(question=question, answer="3",
                                             answer_type="integer"))
    assert (result.reason == "refers_to_document") is refers, result


@pytest.mark.parametrize(("expr", "ok"), [
    ("x plus y", False), ("x +* / y ==", False), ("a-", False), ("x^2+1", True),
    ("\\frac{a}{b}", True), ("\\sin(x) + \\log y", True), ("2\\pi r", True), ("x**2", True),
    ("5\\text{ meters}", True),
])
def test_expression_form(expr: str, ok: bool) -> None:
    assert expression_is_wellformed(expr) is ok


def test_options_must_be_text() -> None:
    raw = json.dumps({"question": "Q?", "options": {"A": None, "B": "2", "C": [1], "D": {}},
                      "multiple_choice_correct": "B"})
    assert parse_challenger_output(raw).reason == "not_four_options"


def test_letter_forms_and_lower_case_options() -> None:
    raw = json.dumps({"multiple_choice_question": "Q? a) one b) two c) three d) four",
                      "multiple_choice_correct": "B) two"})
    assert valid(parse_challenger_output(raw)).answer == "B"


def test_huge_outputs_are_rejected_quickly() -> None:
    assert parse_challenger_output("<question>" * 20000).reason == "too_long"
    assert parse_challenger_output("{" * 60000).reason == "bad_json"


@pytest.mark.parametrize("output", [
    "How many?</question>\n<answer>500</answer>\n<answer_type>integer</answer>",
    "How many?</question><answer>500</answer><answer_type> integer",
    "How many?</question><answer>500</answer><ANSWER_TYPE>Integer</answer_type>",
])
def test_an_answer_type_closed_by_the_wrong_tag_is_still_read(output: str) -> None:
    found = parse_challenger_output(output, "free_form")
    assert found.task is not None and found.task.answer_type == "integer"


def test_an_answer_type_that_is_no_single_word_is_left_to_the_default() -> None:
    found = parse_challenger_output(
        "How many?</question><answer>500</answer><answer_type>a whole number</answer>",
        "free_form")
    assert found.task is not None and found.task.answer_type != "integer"


@pytest.mark.parametrize(("output", "reason"), [
    ('{"question": "What is 6*7 \\ud83d?", "answer": "42"}', "bad_unicode"),
    ('{"question": "What is 6*7?", "answer": "4\\ud83d2"}', "bad_unicode"),
    ('{"question": "How big?", "answer": NaN}', "answer_not_finite"),
    ('{"question": "How big?", "answer": 1e999}', "answer_not_finite"),
    ('{"question": "How small?", "answer": -Infinity}', "answer_not_finite"),
    ('{"question": "Which mark?", "answer": "."}', "answer_no_content"),
    ('{"question": "Which mark?", "answer": "?!", "answer_type": "string"}',
     "answer_no_content"),
    ('{"question": "Which?", "answer": "\\u200b\\u200d"}', "answer_no_content"),
])
def test_golds_nothing_can_be_checked_against_are_invalid(output: str, reason: str) -> None:
    result = parse_challenger_output(output)
    assert not result.valid and result.reason == reason, result


@pytest.mark.parametrize("answer", ["π", "-5", "x", "0", "∞"])
def test_short_golds_with_content_stay_valid_as_strings(answer: str) -> None:
    result = parse_challenger_output(json.dumps({"question": "Which?", "answer": answer,
                                                 "answer_type": "string"}))
    assert result.valid, result
