"""The game settings that combine: ρ schedules and the checks across fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from spice_env.game import GameConfig


def test_rho_is_constant_by_default() -> None:
    config = GameConfig(rho=-0.3)
    assert [config.rho_at(i) for i in (0, 10, 10_000)] == [-0.3, -0.3, -0.3]


def test_rho_schedule_is_piecewise_linear_and_flat_beyond_its_ends() -> None:
    config = GameConfig(rho_schedule=[[10, 0.0], [20, -0.1], [40, -0.5]])
    assert config.rho_at(0) == 0.0 and config.rho_at(10) == 0.0
    assert config.rho_at(15) == pytest.approx(-0.05)
    assert config.rho_at(20) == pytest.approx(-0.1)
    assert config.rho_at(30) == pytest.approx(-0.3)
    assert config.rho_at(40) == config.rho_at(1000) == pytest.approx(-0.5)
    assert GameConfig(rho_schedule=[[5, -1.0]]).rho_at(0) == -1.0  # one point: a constant


@pytest.mark.parametrize("schedule", [[[5, 0.0], [5, -0.1]], [[9, 0.0], [3, -0.1]],
                                      [[-1, 0.0]], [[0, float("nan")]], [[0]], [["a", 0.0]]])
def test_bad_rho_schedules_are_refused(schedule: object) -> None:
    with pytest.raises(ValidationError):
        GameConfig(rho_schedule=schedule)


def test_rho_and_a_schedule_do_not_mix() -> None:
    with pytest.raises(ValidationError, match="give one"):
        GameConfig(rho=-0.5, rho_schedule=[[0, 0.0]])
    GameConfig(rho=-0.1, rho_schedule=[[0, 0.0]])  # the default rho, as a config file states it


def test_label_source_and_format_choice_are_checked() -> None:
    with pytest.raises(ValidationError):
        GameConfig(label_source="vote")
    with pytest.raises(ValidationError):
        GameConfig(format_choice="model")
