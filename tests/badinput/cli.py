"""`robot` as installed, run in-process on a test's own App (engine, key file)."""

from __future__ import annotations

import sys

import pytest

import robot.cli
from robot.cli.common import App, run_guarded


def use_app(monkeypatch: pytest.MonkeyPatch, app: App) -> App:
    """Make every `robot …` of this test run on ``app``."""
    monkeypatch.setattr(robot.cli, "App", lambda config_path: app)
    return app


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        *args: str) -> tuple[int, str, str]:
    """``robot *args``: (exit status, stdout, stderr)."""
    robot.cli._register()
    monkeypatch.setattr(sys, "argv", ["robot", *args])
    status = run_guarded(robot.cli.cli)
    out, err = capsys.readouterr()
    return status, out, err
