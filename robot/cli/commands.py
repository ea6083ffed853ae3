"""Collects the top-level commands: every ``robot/cli/cmd_*.py`` module exports ``COMMANDS``."""

from __future__ import annotations

import importlib
import pkgutil

import click

import robot.cli


def _load() -> list[click.Command]:
    found: list[click.Command] = []
    for info in sorted(pkgutil.iter_modules(robot.cli.__path__), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            module = importlib.import_module(f"robot.cli.{info.name}")
            found.extend(module.COMMANDS)
    return found


ALL: list[click.Command] = _load()
