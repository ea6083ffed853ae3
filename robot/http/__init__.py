"""The robot's HTTP side: push webhooks, health, metrics, the buyer's pickup page and the
delivery API for merchant backends, served by uvicorn inside the daemon's event loop.

Modules: :mod:`~robot.http.app` (routes), :mod:`~robot.http.context` (what the endpoints
borrow from the daemon), :mod:`~robot.http.server` (uvicorn on a pre-bound socket),
:mod:`~robot.http.hooks`, :mod:`~robot.http.health`, :mod:`~robot.http.metrics`,
:mod:`~robot.http.pickup`, :mod:`~robot.http.delivery`, :mod:`~robot.http.links` (pickup
link tokens; importable without Starlette, used by the write-back and the CLI),
:mod:`~robot.http.pages` (HTML), :mod:`~robot.http.ratelimit`.

Importing this package must stay cheap: it imports nothing itself, so the daemon and the CLI
can use :mod:`robot.http.links` without loading the web stack.
"""
