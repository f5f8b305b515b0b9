"""``spice demo`` (episodes through ``gym.make("SpiceCorpus-v0")``) and ``spice assets``."""

from __future__ import annotations

import argparse
import importlib
import math
from typing import Any

from spice_cli.common import (
    UsageError,
    check_model_argument,
    require_ours,
)


def cmd_demo(args: argparse.Namespace) -> int:
    """spice demo: SPICE episodes through ``gym.make("SpiceCorpus-v0")``, printed."""
    import gymnasium as gym

    import spice_env
    from spice_env.rewards import CHALLENGER_REWARDS

    require_ours("agents")
    for name, value, low in (("--episodes", args.episodes, 1), ("--group-size", args.group_size,
                                                                1)):
        if value < low:
            raise UsageError(f"{name} must be at least {low}, got {value}")
    if not 0.0 <= args.p_correct <= 1.0:
        raise UsageError(f"--p-correct must be between 0 and 1, got {args.p_correct}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UsageError(f"--temperature must be 0 or more, got {args.temperature}")
    if args.challenger_reward not in CHALLENGER_REWARDS:
        raise UsageError(f"--challenger-reward {args.challenger_reward!r} is not a registered "
                         f"reward; choose one of {', '.join(sorted(CHALLENGER_REWARDS))}")
    try:
        env = gym.make(spice_env.ENV_ID, corpus=args.corpus, group_size=args.group_size,
                       prompt_style=args.prompt_style, challenger_reward=args.challenger_reward,
                       task_formats=args.task_formats)
    except ValueError as exc:  # the game's settings refused a value
        raise UsageError(f"cannot start the demo: {exc}") from None
    print(f"SpiceCorpus-v0 on {getattr(env.unwrapped, 'corpus', args.corpus)!r}")
    play = _model_player(args) if args.agent == "model" else _scripted_player(args)
    try:
        for episode in range(args.episodes):
            obs, info = env.reset(seed=args.seed + episode)
            obs, reward, terminated, _, info = env.step(play("challenger", obs, info, episode))
            print(f"\n[{episode}] document {info['document_id']} "
                  f"({obs['task_format'] or 'invalid'})")
            if terminated:
                print(f"  invalid question ({info['invalid_reason']}: {info['detail']})")
                print(f"  rewards: challenger {reward:+.3f}")
                continue
            task = info["task"]
            print("  question: " + task.reasoner_question().replace("\n", "\n            "))
            print(f"  gold: {task.answer} ({task.answer_type})")
            obs, reward, terminated, _, info = env.step(play("reasoner", obs, info, episode))
            answers = ", ".join(f"{v.extracted if v.extracted is not None else '-'}"
                                f"{'+' if v.correct else ''}" for v in info["verdicts"])
            print(f"  reasoner answers: {answers}  (+ correct, - nothing boxed)")
            print(f"  pass rate {info['pass_rate']:.2f}; rewards: challenger "
                  f"{info['rewards']['challenger']:.3f}, reasoner {info['rewards']['reasoner']}")
    finally:
        env.close()
    return 0


def _model_player(args: argparse.Namespace) -> Any:
    """Both roles played by one model (the embedded default unless ``--model``)."""
    agents = importlib.import_module("agents")
    base = importlib.import_module("agents.base")
    check_model_argument(args.model, "--model")
    print(f"loading {args.model} ...", flush=True)
    agent = agents.SelfPlayAgent(
        "hf", args.model,
        challenger=base.SamplingConfig(temperature=args.temperature, max_new_tokens=256,
                                       seed=args.seed),
        reasoner=base.SamplingConfig(temperature=args.temperature, max_new_tokens=256,
                                     n=args.group_size, seed=args.seed))

    def play(role: str, obs: Any, info: Any, episode: int) -> Any:
        return agent.act(obs, info)

    return play


def _scripted_player(args: argparse.Namespace) -> Any:
    """The oracle Challenger (a garbage one every fourth episode) and a noisy Reasoner."""
    scripted = importlib.import_module("agents.scripted")
    challenger = scripted.OracleChallenger(seed=args.seed)
    garbage = scripted.GarbageChallenger(seed=args.seed)
    reasoner = scripted.NoisyReasoner(p_correct=args.p_correct, seed=args.seed)

    def play(role: str, obs: Any, info: Any, episode: int) -> Any:
        if role == "challenger":
            return (garbage if episode % 4 == 3 else challenger).act(obs)
        return reasoner.act(obs, info, n=args.group_size)

    return play



def cmd_assets(args: argparse.Namespace) -> int:
    """spice assets: download and prepare the embedded offline assets."""
    from spice_env.assets import prepare_all

    for name, path in prepare_all().items():
        print(f"{name}: {path}")
    if args.models:
        from agents.models import SHIPPED_MODELS, prepare_shipped_model

        for name in SHIPPED_MODELS if "all" in args.models else args.models:
            if name not in SHIPPED_MODELS:
                raise UsageError(f"--models: no shipped model {name!r}; choose from "
                                 f"{', '.join(SHIPPED_MODELS)} or all")
            print(f"model:{name}: {prepare_shipped_model(name)}")
    return 0
