"""The channel contract (:mod:`connectors.testing.channel`) on the Douyin connector and fake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.douyin.harness import DouyinHarness, make_harness
from connectors.testing.channel import ChannelContract, WireContract


class TestDouyinChannel(ChannelContract, WireContract):
    """The Douyin connector keeps the channel contract against its fake."""

    @pytest.fixture
    def harness(self) -> Iterator[DouyinHarness]:
        with make_harness() as h:
            yield h
