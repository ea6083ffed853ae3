"""The channel contract (:mod:`connectors.testing.channel`), run over every installed plugin.

The suite ships in the ground floor so that a third-party plugin runs the same tests; here it
is parametrized over the harness each installed factory brings (``contract_harness()``),
found through the ``robot.connectors`` entry points like the connectors themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.plugin import HasHarness
from connectors.testing.channel import ChannelContract, WireContract
from connectors.testing.harness import ChannelHarness, WireHarness
from robot.registry import discover

FACTORIES = {platform: factory for platform, factory in sorted(discover().factories.items())
             if isinstance(factory, HasHarness) and factory.contract_harness() is not None}
#: The in-memory platform has no wire: its calls are Python calls, and nothing records them.
WIRE = [platform for platform in FACTORIES if platform != "memory"]


def test_every_built_in_plugin_brings_a_harness() -> None:
    """Each built-in connector's factory provides its contract harness."""
    assert {"memory", "taobao", "pinduoduo", "youzan", "wechat", "douyin"} <= set(FACTORIES)


class TestChannelContract(ChannelContract):
    """Every installed plugin's connector keeps the channel contract."""

    @pytest.fixture(params=sorted(FACTORIES))
    def harness(self, request: pytest.FixtureRequest) -> Iterator[ChannelHarness]:
        harness = FACTORIES[request.param].contract_harness()
        assert harness is not None
        with harness as h:
            yield h


class TestWireContract(WireContract):
    """Every installed wire fake records the write-back calls it receives."""

    @pytest.fixture(params=WIRE)
    def harness(self, request: pytest.FixtureRequest) -> Iterator[WireHarness]:
        harness = FACTORIES[request.param].contract_harness()
        assert harness is not None
        with harness as h:
            assert isinstance(h, WireHarness), f"{request.param}'s harness has no write_backs"
            yield h
