"""The ground floor's test kit: what a plugin needs to prove it keeps the contract.

* :mod:`connectors.testing.harness` — the harness a channel plugin provides (its fake plus
  the platform-side actions);
* :mod:`connectors.testing.channel` — the channel contract suite (``ChannelContract``,
  ``WireContract``): subclass it in a test module and give it a ``harness`` fixture;
* :mod:`connectors.testing.supplier` — the supplier contract suite (``SupplierContract``);
* :mod:`connectors.testing.loopback` — serve a fake on a free loopback port in a thread.

The suites import pytest; the harness module does not, so a plugin's
``contract_harness()`` can be loaded without it. Nothing here imports the robot.
"""
