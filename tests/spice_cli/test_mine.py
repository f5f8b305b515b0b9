"""``spice mine``: mined questions as JSON lines and Parquet, read back by the TRL reward; bad
arguments as one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spice_cli.main import main
from spice_env.integrations.trl import verifier_reward
from spice_env.mining import QUESTION_COLUMNS


def mine(tmp_path: Path, name: str, *extra: str) -> Path:
    out = tmp_path / name
    code = main(["mine", "--agent", "scripted", "--corpus", "embedded:math", "--documents", "5",
                 "--group-size", "4", "--batch-size", "2", "--output", str(out), *extra])
    assert code == 0
    return out


def test_jsonl_rows_train_with_the_trl_reward(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = mine(tmp_path, "questions.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert "questions from 5 documents" in capsys.readouterr().out
    assert rows and all(list(row) == list(QUESTION_COLUMNS) for row in rows)
    assert len({row["document_id"] for row in rows}) <= 5
    for row in rows:
        assert 0.0 <= row["pass_rate"] <= 1.0 and row["correct"] == round(row["pass_rate"] * 4)
        assert row["prompt"][-1]["role"] == "user" and row["question"] in row["prompt"][-1][
            "content"]
        assert row["model"] == "scripted" and json.loads(row["config"])["group_size"] == 4
    with verifier_reward() as reward:
        scores = reward(prompts=[r["prompt"] for r in rows],
                        completions=[f"\\boxed{{{r['answer']}}}" for r in rows],
                        answer=[r["answer"] for r in rows],
                        answer_type=[r["answer_type"] for r in rows],
                        options=[r["options"] for r in rows])
    assert scores == [1.0] * len(rows)


def test_parquet_rows_load_with_datasets(tmp_path: Path) -> None:
    from datasets import load_dataset

    out = mine(tmp_path, "questions.parquet", "--task-formats", "mcq")
    data = load_dataset("parquet", data_files=str(out), split="train")
    assert data.num_rows > 0 and set(QUESTION_COLUMNS) <= set(data.column_names)
    row = data[0]
    assert row["kind"] == "mcq" and set(row["options"]) == {"A", "B", "C", "D"}
    with verifier_reward() as reward:
        assert reward(completions=[f"\\boxed{{{row['answer']}}}"], answer=[row["answer"]],
                      answer_type=[row["answer_type"]], options=[row["options"]]) == [1.0]


@pytest.mark.parametrize(("extra", "message"), [
    (["--output", "q.csv"], "give a .jsonl or a .parquet file name"),
    (["--output", "q.jsonl", "--documents", "0"], "--documents must be at least 1"),
    (["--output", "q.jsonl", "--attempts", "2"], "must be at least --group-size"),
    (["--output", "q.jsonl", "--corpus", "nowhere/at-all.jsonl"], "nowhere"),
    (["--output", "q.jsonl", "--challenger-reward", "mystery"], "mystery"),
])
def test_bad_arguments_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    extra: list[str], message: str) -> None:
    args = [str(tmp_path / a) if a.startswith("q.") else a for a in extra]
    assert main(["mine", "--agent", "scripted", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


@pytest.mark.slow
def test_a_model_mines_through_its_own_generations(tmp_path: Path) -> None:
    from agents.tiny import save_tiny_model

    folder = save_tiny_model(tmp_path / "tiny", seed=0)
    out = tmp_path / "tiny.jsonl"
    assert main(["mine", "--model", str(folder), "--corpus", "embedded:math", "--documents", "2",
                 "--group-size", "2", "--max-new-tokens", "8", "--output", str(out)]) == 0
    assert out.exists()  # a random model writes no valid question: an empty dataset, said so
