"""The agents package's top-level names."""

from __future__ import annotations


def test_the_package_exports_its_main_names() -> None:
    import agents
    from agents import SamplingConfig, SelfPlayAgent, load_model
    from agents.models import load_model as direct

    assert load_model is direct and SelfPlayAgent.__name__ == "SelfPlayAgent"
    assert SamplingConfig().temperature == 1.0 and "SelfPlayAgent" in agents.__all__
