"""A regular (non-editable) install in a fresh venv finds both twistd plugins.

The venv sees the system site-packages (for the dependencies), where the editable install
of this checkout also lives; each check below that matters strips the checkout from
``sys.path`` first, so only the venv's copy can satisfy it.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.e2e

#: Run as ``python -c``: drop the editable checkout from sys.path, then the given code.
WITHOUT_CHECKOUT = (
    f"import sys; sys.path[:] = [p for p in sys.path if p.rstrip('/') != {str(REPO)!r}]\n"
)

PLUGINS = """
import logproxy, twisted.plugins.logproxy_plugin as plugin
from twisted.plugin import getPlugins
from twisted.application.service import IServiceMaker
print(logproxy.__file__)
print(plugin.__file__)
print(sorted(p.tapname for p in getPlugins(IServiceMaker)))
"""

TWISTD = "sys.argv = ['twistd', *sys.argv[1:]]\nfrom twisted.scripts.twistd import run\nrun()\n"


def build_flags() -> list[str]:
    """``--no-build-isolation`` when this interpreter has the declared build backend
    (setuptools>=68 and wheel); otherwise pip fetches it, as a user's ``pip install .`` does."""
    major = int(version("setuptools").split(".")[0])
    has_wheel = major >= 71 or importlib.util.find_spec("wheel") is not None
    return ["--no-build-isolation"] if major >= 68 and has_wheel else []


def run(args: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_regular_install_provides_both_plugins(tmp_path: Path) -> None:
    # Build from a copy: an in-tree build would write build/ and *.egg-info into the checkout.
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".*",
            "build",
            "dist",
            "*.egg-info",
            "logs",
            "tests",
            "bench",
            "__pycache__",
            "dropin.cache",
        ),
    )
    venv = tmp_path / "venv"
    run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        tmp_path,
    )
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "-q", "--no-deps", *build_flags(), str(source)], tmp_path)
    site = (
        venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    )
    assert (site / "twisted" / "plugins" / "logproxy_plugin.py").is_file()
    assert not (site / "twisted" / "__init__.py").exists()  # must not shadow Twisted
    assert not list(site.glob("__editable__*"))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    help_text = run([python, "-m", "twisted", "--help"], elsewhere)
    assert "logproxy " in help_text and "logproxy-mock " in help_text

    # the same, and the plugin objects, with only the venv's copy importable
    help_text = run([python, "-c", WITHOUT_CHECKOUT + TWISTD, "--help"], elsewhere)
    assert "logproxy " in help_text and "logproxy-mock " in help_text
    module, plugin, names = run([python, "-c", WITHOUT_CHECKOUT + PLUGINS], elsewhere).splitlines()
    assert Path(module).is_relative_to(venv)
    assert Path(plugin).is_relative_to(venv)
    assert {"logproxy", "logproxy-mock"} <= set(ast.literal_eval(names))

    # and the installed tap really loads: a config error comes from the venv's logproxy
    (elsewhere / "bad.yaml").write_text("serverr: {}\n")
    result = subprocess.run(
        [
            python,
            "-c",
            WITHOUT_CHECKOUT + TWISTD,
            "-n",
            "--pidfile=",
            "logproxy",
            "--config",
            "bad.yaml",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "serverr: unknown key" in result.stderr
