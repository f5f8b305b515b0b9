"""The seam between the environment and the agents: one Observation type, one Role, one task
format, from which the space and the checker's keys derive."""

from __future__ import annotations

import typing

import agents.base
import algorithms.samples
import spice_env.prompting
import spice_env.tasks
from spice_env.env import observation_space
from spice_env.game import observation
from spice_env.spaces import Prose
from spice_env.types import OBSERVATION_KEYS, Observation, Role, TaskFormat, observation_limits
from spice_env.utils.check_env import REQUIRED_KEYS


def test_the_space_and_the_checker_derive_from_the_observation_type() -> None:
    space = observation_space()
    assert sorted(space.spaces) == sorted(OBSERVATION_KEYS) and OBSERVATION_KEYS == REQUIRED_KEYS
    assert tuple(typing.get_type_hints(Observation)) == OBSERVATION_KEYS
    limits = observation_limits()
    assert limits["role"] == 16 and limits["document_id"] == 128 and limits["prompt"] is None
    assert space.spaces["document_id"] == Prose(128) and space.spaces["document"] == Prose()
    made = observation("done")
    assert tuple(made) == OBSERVATION_KEYS and space.contains(made)


def test_one_role_and_one_task_format() -> None:
    assert agents.base.Role is Role and algorithms.samples.Role is Role
    assert typing.get_args(Role) == ("challenger", "reasoner")
    assert spice_env.prompting.TaskFormat is TaskFormat is spice_env.tasks.TaskFormat
    assert not hasattr(spice_env.tasks, "TaskKind") and not hasattr(spice_env.game, "Role")
    assert agents.base.Observation is Observation


def test_a_trainable_sample_is_recognised_by_its_fields() -> None:
    from agents.base import Generation

    good = Generation("x", (1, 2), (3,), (-0.5,), "stop")
    assert algorithms.samples.trainable(good)
    assert not algorithms.samples.trainable("plain text")
    assert not algorithms.samples.trainable(Generation("x", (), (), (), "stop"))  # a chat API's
    assert not algorithms.samples.trainable(Generation("x", (1,), (3, 4), (-0.5,), "stop"))
