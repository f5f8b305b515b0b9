"""The verifiers plugin module: verifiers resolves the id ``spice-verifiers`` to this library's
taskset, environment and harness, as its CLI and trainers do."""

from __future__ import annotations

import pytest
from verifiers.v1.configs.env import default_agent_harness
from verifiers.v1.utils import loaders

import spice_verifiers
from spice_env.integrations import verifiers as spice_vf


@pytest.mark.parametrize("plugin_id", ["spice-verifiers", "spice_verifiers"])
def test_verifiers_resolves_the_plugin_id(plugin_id: str) -> None:
    assert loaders.taskset_class(plugin_id) is spice_vf.SpiceTaskset
    assert loaders.environment_class(plugin_id) is spice_vf.SpiceEnv
    assert loaders.harness_class(plugin_id) is spice_vf.SpiceChatHarness
    assert default_agent_harness(plugin_id).id == plugin_id


def test_the_plugin_exports_what_it_documents() -> None:
    assert spice_verifiers.load_environment is spice_vf.load_environment
    env = spice_verifiers.load_environment(corpus="embedded:math", limit=3)
    assert env.config.taskset.id == spice_vf.ENV_ID == "spice_verifiers"
    tasks = list(env.taskset)
    assert len(tasks) == 3 and {t.data.role for t in tasks} == {"challenger"}
    # both roles run on the host by default: the chat harness needs no sandbox
    assert {type(h) for h in env._harnesses.values()} == {spice_vf.SpiceChatHarness}
    assert env.config.challenger.runtime.type == env.config.reasoner.runtime.type == "subprocess"
