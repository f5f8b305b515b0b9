"""The one registry style: register with a conflict check, unknown names list the valid ones."""

from __future__ import annotations

import pytest

from agents.models import SHIPPED_MODELS
from algorithms.registry import ALGORITHMS
from benchmarks.evaluation import BENCHMARKS
from spice_env.registry import Registry, UnknownName
from spice_env.rewards import CHALLENGER_REWARDS


def test_register_lookup_and_conflicts() -> None:
    colours: Registry[int] = Registry("colour", {"red": 1})
    assert colours.register("blue", 2) == 2 and dict(colours) == {"red": 1, "blue": 2}
    with pytest.raises(ValueError, match="a colour named 'red' exists"):
        colours.register("red", 3)
    colours.register("red", 3, overwrite=True)
    assert colours["red"] == 3 and "red" in colours and len(colours) == 2
    with pytest.raises(UnknownName, match="unknown colour 'green'; valid: blue, red"):
        colours["green"]
    for kind in (KeyError, ValueError):  # either except clause catches it
        with pytest.raises(kind):
            colours["green"]
    assert colours.get("green") is None
    for bad in ("", "  ", 3):
        with pytest.raises(ValueError, match="non-empty string name"):
            colours.register(bad, 0)  # type: ignore[arg-type]
    assert colours.unregister("blue") == 2 and list(colours) == ["red"]


@pytest.mark.parametrize(("registry", "kind"), [
    (CHALLENGER_REWARDS, "challenger reward"), (ALGORITHMS, "algorithm"),
    (BENCHMARKS, "benchmark"), (SHIPPED_MODELS, "shipped model")])
def test_every_named_thing_uses_it(registry: Registry[object], kind: str) -> None:
    assert isinstance(registry, Registry) and registry.kind == kind
    first = registry.names()[0]
    with pytest.raises(ValueError, match=f"a {kind} named '{first}' exists"):
        registry.register(first, registry[first])
    with pytest.raises(UnknownName, match=f"unknown {kind} 'nope'; valid: {first}"):
        registry["nope"]
