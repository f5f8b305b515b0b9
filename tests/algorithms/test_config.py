"""Training configurations: defaults, YAML, overrides and the messages for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from algorithms.config import ConfigError, TrainConfig, build_config, load_config
from algorithms.grpo import GRPOConfig


def test_defaults_follow_the_paper() -> None:
    config = load_config(None)
    assert config.algorithm.name == "drgrpo" and config.algorithm.clip_eps == 0.2
    assert config.algorithm.beta == 0.0 and config.optimizer.lr == 1e-6
    assert config.game.group_size == 8 and config.challenger.temperature == 1.0
    assert config.reasoner.temperature == 1.0 and config.trainer.iterations == 640


def test_yaml_and_dotted_overrides(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text("rollout:\n  batch_size: 4\n  attempts: 6\ngame:\n  group_size: 4\n"
                    "algorithm:\n  name: drgrpo\n  loss_normaliser: 256\n")
    config = load_config(file, ["trainer.iterations=20", "algorithm.name=grpo",
                                "algorithm.beta=0.04", "rollout.corpus=embedded:general",
                                "game.challenger_reward=absolute_zero"])
    assert isinstance(config.algorithm, GRPOConfig) and config.algorithm.beta == 0.04
    assert config.trainer.iterations == 20 and config.rollout.batch_size == 4
    assert config.rollout.corpus == "embedded:general"
    assert config.game.challenger_reward == "absolute_zero"
    assert TrainConfig.model_validate(config.model_dump()) == config  # round trip


@pytest.mark.parametrize(("data", "overrides", "message"), [
    ({"trainer": {"iterashuns": 3}}, [], "trainer.iterashuns: unknown key"),
    ({}, ["trainer.iterations=0"], "trainer.iterations: Input should be greater than or equal"),
    ({}, ["algorithm.clip_eps=2"], "algorithm.clip_eps: Input should be less than 1"),
    ({}, ["algorithm.name=sac"], "algorithm: unknown algorithm 'sac'; valid: drgrpo, grpo, ppo"),
    ({}, ["optimizer.lr=fast"], "optimizer.lr: Input should be a valid number"),
    ({}, ["rollout.attempts=4"], "rollout.attempts (N=4) must be at least game.group_size"),
    ({}, ["model.frozen_challenger=big-model"], "set trainer.train_roles to 'reasoner'"),
    ({"surprise": {}}, [], "surprise: unknown key"),
])
def test_bad_configs_name_the_key(data: dict[str, object], overrides: list[str],
                                  message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_config(data, overrides)
    assert message in str(error.value)


def test_bad_overrides_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dotted\.key=value"):
        build_config({}, ["trainer.iterations"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        build_config({}, ["trainer.iterations=5", "trainer.iterations.x=1"])
    with pytest.raises(ConfigError, match=r"no config file .*missing\.yaml"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(listed)


def test_extends_merges_sections_and_refuses_cycles(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "rollout:\n  batch_size: 4\n  corpus: {embedded:math: 0.5, embedded:general: 0.5}\n"
        "algorithm:\n  name: grpo\n  beta: 0.1\n")
    (tmp_path / "child.yaml").write_text(
        "extends: base.yaml\nrollout:\n  attempts: 12\n  corpus: {embedded:math: 1.0}\n"
        "algorithm:\n  name: drgrpo\n")
    config = load_config(tmp_path / "child.yaml")
    assert config.rollout.batch_size == 4 and config.rollout.attempts == 12
    assert config.rollout.corpus == {"embedded:math": 1.0}  # a value is replaced, not merged
    assert config.algorithm.name == "drgrpo" and config.algorithm.beta == 0.0
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "orphan.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "orphan.yaml")
    (tmp_path / "odd.yaml").write_text("extends: [1]\n")
    with pytest.raises(ConfigError, match="extends must be a file name"):
        load_config(tmp_path / "odd.yaml")


def test_group_size_is_declared_once() -> None:
    assert build_config({}).reasoner.n == 8 == build_config({}).game.group_size
    assert build_config({"game": {"group_size": 3}}).reasoner.n == 3
    derived = build_config({"game": {"group_size": 3}, "reasoner": {"max_new_tokens": 9}})
    assert derived.reasoner.n == 3 and derived.reasoner.max_new_tokens == 9
    assert build_config({}).reasoner.max_new_tokens == 512  # the section's own default
    assert build_config({"game": {"group_size": 2}, "reasoner": {"n": 2}}).reasoner.n == 2
    with pytest.raises(ConfigError, match=r"reasoner.n \(4\) differs from game.group_size "
                                          r"\(G=2\)"):
        build_config({"game": {"group_size": 2}, "reasoner": {"n": 4}})
    demo = load_config("cpu-demo", ["game.group_size=2", "rollout.attempts=2"])
    assert demo.reasoner.n == 2 and demo.reasoner.max_new_tokens == 384
    rebuilt = TrainConfig.model_validate(demo.model_dump(mode="json"))
    assert rebuilt == demo


def test_corpus_entries_in_a_config(tmp_path: Path) -> None:
    from algorithms.preflight import check_corpus

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"question": "Q{i}: {"word " * 30}", "reference_answer": "{i}"}}\n'
                            for i in range(4)))
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text(rows.read_text())
    config = build_config({"rollout": {"corpus": [
        {"hf": str(folder), "text": "{question}\n\n{reference_answer}", "weight": 0.5},
        {"hf": str(folder), "text": "question", "weight": 0.5, "max_records": 2}]}})
    assert isinstance(config.rollout.corpus_spec(), list)
    peeked = check_corpus(config)
    assert [round(p.weight, 2) for p in peeked] == [0.5, 0.5]
    assert peeked[0].first.startswith("Q0:")
    single = build_config({"rollout": {"corpus": {"hf": str(folder), "text": "question"}}})
    assert len(check_corpus(single)) == 1
    for bad, message in ((["embedded"], "each corpus list item is an entry"),
                         ({"hf": str(folder), "splt": "x"}, "unknown key"),
                         ({"embedded:math": "half"}, "numeric weights"), ([], "at least one")):
        with pytest.raises(ConfigError, match=message):
            build_config({"rollout": {"corpus": bad}})
