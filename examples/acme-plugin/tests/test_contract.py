"""Acme keeps the robot's channel contract: the suite shipped in ``connectors.testing``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from acme_robot.harness import AcmeHarness, make_harness

from connectors.testing.channel import ChannelContract, WireContract


class TestAcmeChannel(ChannelContract, WireContract):
    """The whole channel contract, and the write-back records of a wire fake."""

    @pytest.fixture
    def harness(self) -> Iterator[AcmeHarness]:
        with make_harness() as h:
            yield h
