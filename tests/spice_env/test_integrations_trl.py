"""spice_env.integrations.trl: the verifier as a TRL reward function, called directly and inside
a real GRPOTrainer step on the CPU with a tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spice_env.integrations.trl import VerifierReward, completion_text, verifier_reward
from spice_env.verify import Verifier


@pytest.fixture(scope="module")
def reward() -> Iterator[VerifierReward]:
    with Verifier(timeout_s=5) as verifier, verifier_reward(verifier) as function:
        yield function


def test_string_and_chat_completions(reward: VerifierReward) -> None:
    completions = ["so \\boxed{12}", [{"role": "assistant", "content": "it is \\boxed{13}"}],
                   [{"role": "user", "content": "q"},
                    {"role": "assistant", "content": [{"type": "text", "text": "\\boxed{1/2}"}]}],
                   "no box at all"]
    found = reward(prompts=["p"] * 4, completions=completions,
                   answer=["12", "12", "\\frac{1}{2}", "7"],
                   answer_type=["integer", "integer", "expression", "integer"],
                   trainer_state=object())
    assert found == [1.0, 0.0, 1.0, 0.0]


def test_types_are_inferred_and_options_read(reward: VerifierReward) -> None:
    found = reward(completions=["\\boxed{B}", "\\boxed{Paris}", "\\boxed{0.5}", "\\boxed{3}"],
                   answer=["B", "A", "\\frac{1}{2}", "3"],
                   options=[["x", "y", "z", "w"], {"A": "Paris", "B": "Rome", "C": "Oslo",
                                                  "D": "Bern"}, None, None])
    assert found == [1.0, 1.0, 1.0, 1.0]


def test_rows_without_gold_get_none(reward: VerifierReward) -> None:
    assert reward(completions=["\\boxed{1}", "\\boxed{1}"], answer=[None, " "]) == [None, None]


def test_bad_columns_are_clear_errors(reward: VerifierReward) -> None:
    with pytest.raises(KeyError, match="no 'answer' column"):
        reward(completions=["\\boxed{1}"], solution=["1"])
    with pytest.raises(ValueError, match="row 0: answer_type 'number'"):
        reward(completions=["\\boxed{1}"], answer=["1"], answer_type=["number"])
    with pytest.raises(ValueError, match="2 values for 1 completions"):
        reward(completions=["\\boxed{1}"], answer=["1", "2"])
    with pytest.raises(ValueError, match="format_weight"):
        verifier_reward(format_weight=-1)


def test_column_names_and_format_weight() -> None:
    with verifier_reward(answer_column="solution", format_weight=0.1, name="mine") as custom:
        assert custom.__name__ == "mine"
        found = custom(completions=["\\boxed{2}", "\\boxed{3}", "none"], solution=["2"] * 3)
    assert found == [pytest.approx(1.1), pytest.approx(0.1), 0.0]


def test_completion_text_of_odd_shapes() -> None:
    assert completion_text({"role": "assistant", "content": "x"}) == "x"
    assert completion_text([]) == "" and completion_text(None) == "" and completion_text(3) == ""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_inside_a_real_grpo_trainer_step(tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from agents.tiny import save_tiny_model

    folder = save_tiny_model(tmp_path / "tiny", seed=0)
    seen: list[dict[str, Any]] = []

    with verifier_reward() as spice:
        def watched(prompts: Any, completions: Any, **columns: Any) -> list[float | None]:
            seen.append({"completions": list(completions), **columns})
            return spice(prompts, completions, **columns)

        watched.__name__ = "spice_verifier"
        dataset = Dataset.from_list([
            {"prompt": "What is 2 + 2?", "answer": "4", "answer_type": "integer"},
            {"prompt": "Half of one?", "answer": "\\frac{1}{2}", "answer_type": "expression"}])
        config = GRPOConfig(
            output_dir=str(tmp_path / "out"), use_cpu=True, per_device_train_batch_size=2,
            num_generations=2, max_completion_length=8, max_steps=1, logging_steps=1,
            save_strategy="no", report_to=[], learning_rate=1e-4, beta=0.0,
            loss_type="dr_grpo", dataloader_num_workers=0, disable_tqdm=True)
        trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(folder),
                              reward_funcs=[watched], args=config, train_dataset=dataset,
                              processing_class=AutoTokenizer.from_pretrained(folder))
        trainer.train()
    assert seen and all(len(call["answer"]) == len(call["completions"]) for call in seen)
    assert {a for call in seen for a in call["answer"]} <= {"4", "\\frac{1}{2}"}
    key = "rewards/spice_verifier/mean"
    logged = [entry for entry in trainer.state.log_history if key in entry]
    assert logged and logged[0][key] == 0.0  # a random model's text holds no box
