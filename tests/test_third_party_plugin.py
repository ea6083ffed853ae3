"""A third-party plugin, installed into its own venv, works without a line of robot/ changed.

The example plugin (``examples/acme-plugin``: its own ``pyproject.toml``, an entry point in
``robot.connectors``, built only on the ground floor) is installed with pip into a fresh venv
that sees this project's packages; then, in that venv, ``robot config check`` accepts a shop
on its platform, ``robot fake --help`` lists its fake and ``robot fake acme`` serves it, and
the channel contract suite shipped in ``connectors.testing`` passes on it. The project's own
venv, where the plugin is not installed, refuses the same shop: the install is what counts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

from connectors.testing.channel import ChannelContract, WireContract

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "acme-plugin"
SHOP = """\
name: acme-main
platform: acme
items:
  - sku_id: ACME-SKU-1
    pool: cards
    quantity: 1
platform_config:
  base_url: http://127.0.0.1:9/
  api_key: ${ACME_API_KEY}
  push_secret: ${ACME_PUSH_SECRET}
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv seeing this project's packages, with the example plugin pip-installed in it."""
    root = tmp_path_factory.mktemp("plugin-venv")
    env_dir = root / "venv"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    # The project's site-packages (its dependencies, its own editable install, pip) come
    # after the new venv's own, as --system-site-packages would give a base interpreter's.
    project = sysconfig.get_paths()["purelib"]
    Path(purelib, "zz_project_site.pth").write_text(
        f"import site; site.addsitedir({project!r})\n", encoding="utf-8")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps",
                    "--disable-pip-version-check", "-e", str(EXAMPLE)],
                   check=True, cwd=root, timeout=600)
    print(f"plugin venv ready in {time.monotonic() - started:.1f}s")
    return python


def _robot(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ACME_API_KEY": "k-123", "ACME_PUSH_SECRET": "s-456"}
    env.pop("ROBOT_CONFIG", None)
    return subprocess.run([str(python), "-m", "robot", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _config(tmp_path: Path) -> Path:
    (tmp_path / "shops").mkdir()
    (tmp_path / "shops" / "acme.yaml").write_text(SHOP, encoding="utf-8")
    robot_file = tmp_path / "robot.yaml"
    robot_file.write_text(f"database: sqlite:///{tmp_path / 'robot.db'}\n"
                          f"key_file: {tmp_path / 'robot.key'}\nshops: shops/*.yaml\n",
                          encoding="utf-8")
    return robot_file


def test_config_check_accepts_a_shop_of_the_installed_plugin(venv: Path, tmp_path: Path) -> None:
    """In the plugin's venv, ``robot config check`` validates the acme shop with the plugin's
    own config model; without the plugin, the same shop is refused for its platform."""
    robot_file = _config(tmp_path)
    accepted = _robot(venv, "-c", str(robot_file), "config", "check", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert "config OK: 1 shop(s)" in accepted.stdout
    without = _robot(Path(sys.executable), "-c", str(robot_file), "config", "check",
                     cwd=tmp_path)
    assert without.returncode == 2
    assert "acme" in without.stderr


def test_config_check_names_a_field_of_the_plugins_model(venv: Path, tmp_path: Path) -> None:
    """A mistake in the plugin's section is reported by file, shop and field."""
    robot_file = _config(tmp_path)
    shop = tmp_path / "shops" / "acme.yaml"
    shop.write_text(SHOP.replace("  base_url: http://127.0.0.1:9/\n", ""), encoding="utf-8")
    refused = _robot(venv, "-c", str(robot_file), "config", "check", cwd=tmp_path)
    assert refused.returncode == 2
    assert "acme.yaml" in refused.stderr
    assert "acme-main" in refused.stderr
    assert "base_url" in refused.stderr


def test_robot_fake_lists_and_serves_the_plugins_fake(venv: Path, tmp_path: Path) -> None:
    """``robot fake --help`` lists acme beside the built-in fakes; ``robot fake acme`` serves
    it on loopback until interrupted."""
    listed = _robot(venv, "fake", "--help", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for name in ("acme", "taobao", "pinduoduo", "youzan", "wechat"):
        assert f"  {name} " in listed.stdout
    with subprocess.Popen([str(venv), "-m", "robot", "fake", "acme", "--json",
                           "--seed-orders", "2"], cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as served:
        try:
            assert served.stdout is not None
            lines: list[str] = []
            while not lines or lines[-1] != "}\n":
                line = served.stdout.readline()
                assert line, "the fake exited before announcing itself"
                lines.append(line)
            info = json.loads("".join(lines))
            assert info["base_url"].startswith("http://127.0.0.1:")
            state = httpx.get(info["control"], timeout=10).json()
            assert {o["id"] for o in state["orders"]} == set(info["seeded_orders"])
            assert len(info["seeded_orders"]) == 2
        finally:
            served.send_signal(signal.SIGINT)
            served.wait(timeout=30)


def test_the_contract_suite_passes_on_the_plugin(venv: Path) -> None:
    """The plugin's own tests run the channel contract suite from connectors.testing."""
    result = subprocess.run([str(venv), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                            cwd=EXAMPLE, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    # Every test of the contract ran (none skipped or left out), however many it has.
    contract = {name for cls in (ChannelContract, WireContract) for name in dir(cls)
                if name.startswith("test_")}
    assert f"{len(contract)} passed" in result.stdout
