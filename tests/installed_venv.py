"""A fresh virtual environment with this project installed from a built wheel (not editable), as a
cluster worker or a container gets it. Used by tests that run the package from outside the repository.

Cheap to build: the wheel is built without isolation, the venv has no pip of its own, and the
project's dependencies come from the test interpreter's site-packages, added as a plain path by a
.pth file. Python does not process the .pth files inside a directory added that way (the editable
install's finder among them), so only the wheel provides ``pipeline`` and ``training``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from paths import REPO

NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "outputs", "multirun", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"
)


@dataclass
class InstalledVenv:
    """A venv holding the project's wheel; ``purelib`` is its site-packages."""

    root: Path
    purelib: str

    @property
    def bin(self) -> str:
        return str(self.root / "bin")

    @property
    def python(self) -> str:
        return os.path.join(self.bin, "python")

    def env(self) -> dict[str, str]:
        """The environment for processes of this venv: no PYTHONPATH (nothing but the venv's own
        paths), its bin first on PATH (so a plain ``python``, as Beam's worker pool starts its
        workers, is this venv's)."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = os.pathsep.join([self.bin, env.get("PATH", "")])
        env["VIRTUAL_ENV"] = str(self.root)
        return env


def build_installed_venv(work_dir: Path) -> InstalledVenv:
    """Build this repository's wheel from a copy (nothing is written into the repository) and
    install it into a new venv under ``work_dir``; checks that the venv imports the installed copy."""
    source = work_dir / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    wheels = work_dir / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("bert_pretrain-*.whl")

    root = work_dir / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = str(root / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with open(os.path.join(purelib, "dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", str(wheel)],
        check=True,
        timeout=300,
    )
    venv = InstalledVenv(root, purelib)

    elsewhere = work_dir / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    where = subprocess.run(
        [python, "-c", "import pipeline, training; print(pipeline.__file__, training.__file__)"],
        cwd=elsewhere,
        env=venv.env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert all(path.startswith(purelib) for path in where), where  # the installed copy, not the repository
    return venv
