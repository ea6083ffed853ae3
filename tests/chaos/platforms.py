"""What the chaos driver can do to each platform's fake: inject faults, redirect its pushes,
duplicate and reorder them, ship an order by hand, and watch every write-back arrive.

The fakes are the ones ``robot demo`` drives (``connectors/<platform>/demo.py``); this module
only reaches into their state objects, never into the robot.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.plugin import DemoDriver
from robot.vault import PAIR_SEP, mask

#: Called with the platform order id of a write-back the moment it reaches the fake.
ShipWatcher = Callable[[str], None]


@dataclass
class Chaos:
    """One platform's chaos controls (the base class: faults only)."""

    driver: DemoDriver
    injected: dict[str, int] = field(default_factory=dict)
    #: the merchant can ship an order by hand (then the robot's write-back meets "shipped")
    hand_ships = False

    @property
    def state(self) -> Any:
        return self.driver.state  # type: ignore[attr-defined]

    def why_not_placed(self, order_id: str) -> str | None:
        """Why an order the platform took never reached a robot, when the platform knows
        (one that buys from the robot, 闲管家, was refused or gave up); None otherwise."""
        return None

    def count(self, fault: str, n: int = 1) -> None:
        if n:
            self.injected[fault] = self.injected.get(fault, 0) + n

    # -- faults -------------------------------------------------------------------------
    def menu(self) -> dict[str, dict[str, Any]]:
        """Fault name → the ``set_faults`` arguments that arm it."""
        return {}

    def inject(self, rng: random.Random) -> str:
        """Arm one random fault; returns its name."""
        name, changes = rng.choice(sorted(self.menu().items()))
        if name == "token_expiry":
            self.expire_tokens()
        else:
            self.state.set_faults(**changes)
        self.count(name)
        return name

    def expire_tokens(self) -> None:
        raise NotImplementedError

    def calm(self) -> None:
        """Clear every armed fault and let hanging calls finish (the load has stopped)."""
        release = getattr(self.state, "release_hangs", None)
        if release is not None:
            release()

    # -- pushes -------------------------------------------------------------------------
    def point_pushes(self, robot_url: str) -> None:
        """Send the platform's pushes to this robot from now on (no-op: it does not push)."""

    def duplicate_pushes(self, rng: random.Random) -> int:
        return 0

    def compress_retries(self, scale: float) -> None:
        """Run the platform's push retry schedule ``scale`` times as fast (same retry count)."""

    def reorder_pushes(self) -> int:
        return 0

    # -- the merchant, by hand -------------------------------------------------------------
    def ship_by_hand(self, order_id: str) -> bool:
        return False

    # -- watching write-backs ---------------------------------------------------------------
    def watch_shipments(self, watcher: ShipWatcher) -> None:
        raise NotImplementedError

    def write_backs(self) -> list[dict[str, Any]]:
        """Every ship and memo call the fake received, as its ``/__fake__/state`` serves
        them (``connectors.fakekit.WriteBackLog``)."""
        return list(self.state.snapshot()["write_backs"])


class TaobaoChaos(Chaos):
    hand_ships = True

    def menu(self) -> dict[str, dict[str, Any]]:
        return {"latency": {"latency_ms": 300}, "http_500": {"http_500": 3},
                "throttle": {"throttle": 3, "ban_seconds": 1}, "timeout": {"hang": 1}}

    def calm(self) -> None:
        self.state.set_faults(latency_ms=0, http_500=0, throttle=0, hang=0)
        super().calm()

    def ship_by_hand(self, order_id: str) -> bool:
        return bool(self.state.ship_by_merchant(int(order_id)))

    def watch_shipments(self, watcher: ShipWatcher) -> None:
        def on_call(method: str, params: Mapping[str, str]) -> None:
            if method == "taobao.logistics.dummy.send":
                watcher(str(params.get("tid", "")))
        self.state.on_call = on_call


class PinduoduoChaos(Chaos):
    hand_ships = True

    def menu(self) -> dict[str, dict[str, Any]]:
        return {"latency": {"latency_ms": 300}, "http_500": {"http_500": 3},
                "throttle": {"throttle": 3}, "unavailable": {"unavailable": 2},
                "timeout": {"hang": 1}, "token_expiry": {}}

    def expire_tokens(self) -> None:
        self.state.expire_access_tokens()

    def calm(self) -> None:
        self.state.set_faults(latency_ms=0, http_500=0, throttle=0, unavailable=0, hang=0)
        super().calm()

    def ship_by_hand(self, order_id: str) -> bool:
        return bool(self.state.ship_by_merchant(order_id))

    def watch_shipments(self, watcher: ShipWatcher) -> None:
        def on_call(api: str, params: Mapping[str, str]) -> None:
            if api == "pdd.logistics.online.send" and params.get("redelivery_type", "1") == "1":
                watcher(str(params.get("order_sn", "")))
        self.state.on_call = on_call


class PushingChaos(Chaos):
    """A platform that pushes: its queue of pushes can be redirected, repeated and reordered.

    Subclasses name the fake's attributes: the queue, each item's due time, the push URL and
    the retry schedule.
    """

    queue = "messages"
    due = "next_at"
    url = "push_url"
    delays = "push_retry_delays"
    hook = ""

    def point_pushes(self, robot_url: str) -> None:
        with self.state.lock:
            setattr(self.state, self.url, f"{robot_url}/hooks/{self.hook}")

    def compress_retries(self, scale: float) -> None:
        setattr(self.state, self.delays,
                tuple(d * scale for d in getattr(self.state, self.delays)))

    def duplicate_pushes(self, rng: random.Random) -> int:
        """The platform sends a push again though the robot accepted it (same id)."""
        with self.state.lock:
            items = getattr(self.state, self.queue)
            picked = rng.sample([i for i in items if i.delivered],
                                min(3, sum(1 for i in items if i.delivered)))
            for item in picked:
                again = copy.copy(item)
                again.delivered, again.attempts = False, 0
                setattr(again, self.due, self.state.clock())
                items.append(again)
        self.count("duplicate_push", len(picked))
        return len(picked)

    def reorder_pushes(self) -> int:
        """The pending pushes go out newest first."""
        with self.state.lock:
            items = getattr(self.state, self.queue)
            pending = [i for i, item in enumerate(items) if not item.delivered]
            for i, item in zip(pending, [items[i] for i in reversed(pending)], strict=True):
                items[i] = item
        if len(pending) > 1:
            self.count("out_of_order_pushes")
        return len(pending)


class YouzanChaos(PushingChaos):
    hook = "youzan-demo"

    def menu(self) -> dict[str, dict[str, Any]]:
        return {"latency": {"latency_ms": 300}, "http_500": {"http_500": 3},
                "throttle": {"throttle": 3}, "token_expiry": {},
                "token_endpoint_500": {"token_endpoint_500": 2}}

    def expire_tokens(self) -> None:
        self.state.set_faults(expire_tokens=True)

    def calm(self) -> None:
        self.state.set_faults(latency_ms=0, http_500=0, throttle=0, token_endpoint_500=0)

    def watch_shipments(self, watcher: ShipWatcher) -> None:
        def on_call(api: str, params: Mapping[str, Any]) -> None:
            if api == "youzan.logistics.online.confirm":
                watcher(str(params.get("tid", "")))
        self.state.on_call = on_call


class WechatChaos(PushingChaos):
    queue, due, url, delays, hook = ("notifications", "due", "notify_url", "retry_delays",
                                     "wechat-demo")

    def menu(self) -> dict[str, dict[str, Any]]:
        # Not the minute quota (45011): it parks a write-back for a whole minute, which a
        # short run cannot wait out; tests/wechat covers it.
        return {"http_502": {"fail_next": 3}, "busy": {"busy_next": 2}, "token_expiry": {}}

    def expire_tokens(self) -> None:
        self.state.expire_tokens()

    def calm(self) -> None:
        self.state.set_faults(fail_next=0, throttle_next=0, busy_next=0)

    def watch_shipments(self, watcher: ShipWatcher) -> None:
        def on_call(path: str, body: Any) -> None:
            if path == "upload_shipping_info" and isinstance(body, dict):
                key = body.get("order_key")
                if isinstance(key, dict):
                    watcher(self._out_trade_no(key))
        self.state.on_call = on_call

    def _out_trade_no(self, key: Mapping[str, Any]) -> str:
        """The merchant's order number of an upload keyed either way (the fake's lock is held)."""
        if key.get("order_number_type") == 2:
            for out_trade_no, payment in self.state.payments.items():
                if payment.transaction_id == key.get("transaction_id"):
                    return str(out_trade_no)
            return ""
        return str(key.get("out_trade_no", ""))


class DouyinChaos(PushingChaos):
    hook = "douyin-demo"

    def menu(self) -> dict[str, dict[str, Any]]:
        return {"latency": {"latency_ms": 300}, "http_500": {"http_500": 3},
                "throttle": {"throttle": 3}, "timeout": {"hang": 1}, "token_expiry": {}}

    def expire_tokens(self) -> None:
        self.state.expire_tokens()

    def calm(self) -> None:
        self.state.set_faults(latency_ms=0, http_500=0, throttle=0, hang=0)
        super().calm()

    def watch_shipments(self, watcher: ShipWatcher) -> None:
        def on_call(method: str, params: Mapping[str, Any]) -> None:
            if method == "coupons.syncV2":
                watcher(self.state.parent_of(str(params.get("order_id", ""))) or "")
        self.state.on_call = on_call


class GoofishChaos(Chaos):
    """闲管家 buys from the robot: its purchases go to a robot that is up (like a load
    balancer), a hand-over is witnessed when the codes reach it (in an answer or a callback),
    and its callback endpoint refuses a few callbacks on demand."""

    def menu(self) -> dict[str, dict[str, Any]]:
        return {"callback_failures": {"fail_next": 3}}

    def inject(self, rng: random.Random) -> str:
        self.state.fail_next += 3
        self.count("callback_failures")
        return "callback_failures"

    def calm(self) -> None:
        self.state.fail_next = 0

    def point_pushes(self, robot_url: str) -> None:
        self.driver.point_gateway(robot_url)  # type: ignore[attr-defined]

    def why_not_placed(self, order_id: str) -> str | None:
        refused = self.driver.refusals.get(order_id)  # type: ignore[attr-defined]
        if refused is not None:
            return f"the gateway refused it: {refused}"
        if order_id in self.driver.abandoned:  # type: ignore[attr-defined]
            return "闲管家 gave up placing it: no robot answered for its every try"
        return None

    def watch_shipments(self, watcher: ShipWatcher) -> None:
        self.driver.watchers.append(watcher)  # type: ignore[attr-defined]

    def write_backs(self) -> list[dict[str, Any]]:
        """Each hand-over as a call: ``answer`` (codes in the purchase's answer, after the
        robot recorded the order shipped) or ``ship`` (the outbox's callback), its codes
        masked as the robot masks them — every one must carry the same codes."""
        calls = []
        for h in list(self.driver.handovers):  # type: ignore[attr-defined]
            codes = tuple(mask(f"{no}{PAIR_SEP}{pwd}" if no else pwd) for no, pwd in h["codes"])
            calls.append({**{k: v for k, v in h.items() if k != "codes"},
                          "masked_codes": codes})
        return calls


CHAOS: dict[str, type[Chaos]] = {
    "taobao": TaobaoChaos, "pinduoduo": PinduoduoChaos, "youzan": YouzanChaos,
    "wechat": WechatChaos, "douyin": DouyinChaos, "goofish": GoofishChaos,
}


def chaos_for(driver: DemoDriver) -> Chaos:
    return CHAOS[driver.platform](driver)
