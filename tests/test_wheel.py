"""The wheel carries the migrations: an installed robot upgrades its database with no checkout.

The Alembic environment lives in the top-level ``migrations/`` directory of the source tree;
``robot run`` upgrades on start, so a robot installed from a wheel must find it there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_UPGRADE = """
import sys
from pathlib import Path
import migrations, robot
from robot.db import make_engine
from robot.migrate import current_revision, head_revision, upgrade
installed = Path(sys.argv[1]).resolve()
assert Path(robot.__file__).resolve().is_relative_to(installed), robot.__file__
assert Path(migrations.__file__).resolve().is_relative_to(installed), migrations.__file__
engine = make_engine("sqlite:///" + sys.argv[2])
upgrade(engine)
print(current_revision(engine), head_revision())
"""


@pytest.mark.slow
def test_a_robot_installed_from_the_wheel_upgrades_an_empty_database(tmp_path: Path) -> None:
    """The built wheel holds env.py and every revision, and upgrades SQLite to head from them."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
         str(ROOT), "-w", str(tmp_path / "wheel")],
        capture_output=True, text=True, check=False, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("delivery_robot-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    revisions = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))
    assert {"migrations/__init__.py", "migrations/env.py", "migrations/script.py.mako"} <= names
    assert {f"migrations/versions/{name}" for name in revisions} <= names

    # Installed alone into a target directory that comes first on the path: the robot and its
    # migrations load from the wheel, the dependencies from this environment; the current
    # directory is elsewhere so that the checkout cannot be picked up instead.
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)], capture_output=True, text=True, check=False, timeout=300)
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run(
        [sys.executable, "-c", _UPGRADE, str(target), str(tmp_path / "robot.db")],
        capture_output=True, text=True, check=False, timeout=120, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    current, head = run.stdout.split()
    assert current == head


def test_a_foreign_migrations_package_is_refused(tmp_path: Path) -> None:
    """A `migrations` package that is not the robot's (first on the path) is never run."""
    foreign = tmp_path / "migrations"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("")
    (foreign / "env.py").write_text("raise SystemExit('ran a foreign env.py')\n")
    script = ("from robot.migrate import head_revision\n"
              "try:\n    head_revision()\nexcept RuntimeError as exc:\n    print(exc)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=False, timeout=60, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "is not the robot's own" in run.stdout
