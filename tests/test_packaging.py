"""The wheel a user installs holds what the package needs outside the source tree: the bundled
nuclei set the demo trains on, the licences and the type marker, and builds without the build
backend warning about deprecated metadata (setuptools turns those warnings into errors later)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_version() -> tuple[int, ...]:
    try:
        import setuptools
    except ImportError:
        return (0,)
    return tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # build from a copy of what the sdist would hold: setuptools writes build/ and *.egg-info
    # next to pyproject.toml, and the checkout stays as it was
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "unetzoo", src / "unetzoo", ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)]
    if _setuptools_version() >= (77,):  # the backend pyproject.toml asks for is here: no download
        cmd.insert(4, "--no-build-isolation")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}"
    (whl,) = out.glob("unetzoo-*.whl")
    return whl, proc.stdout + proc.stderr


def test_wheel_builds_without_deprecated_metadata(wheel):
    _, log = wheel
    assert "Warning" not in log, log


def test_wheel_holds_the_nuclei_set_licences_and_entry_point(wheel, tmp_path):
    whl, _ = wheel
    names = zipfile.ZipFile(whl).namelist()
    images = {Path(n).stem for n in names if n.startswith("unetzoo/assets/nuclei/images/")}
    masks = {Path(n).stem for n in names if n.startswith("unetzoo/assets/nuclei/masks/")}
    source = {p.stem for p in (ROOT / "unetzoo" / "assets" / "nuclei" / "images").glob("*.png")}
    assert images == masks == source and len(source) == 100
    assert "unetzoo/py.typed" in names
    dist = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{dist}/licenses/LICENSE" in names
    meta = zipfile.ZipFile(whl).read(f"{dist}/METADATA").decode()
    assert "License-Expression: Apache-2.0 AND CC0-1.0" in meta
    entry = zipfile.ZipFile(whl).read(f"{dist}/entry_points.txt").decode()
    assert "unetzoo = unetzoo.cli:main" in entry

    # the installed package (not this checkout) finds and reads its own copy of the set
    zipfile.ZipFile(whl).extractall(tmp_path)
    code = ("import unetzoo.data as d; r = d.nuclei_root(); ds = d.SegmentationFolder(r, channels=3); "
            "print(r); print(len(ds))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, check=False)
    assert proc.returncode == 0, proc.stderr
    root, n = proc.stdout.split()
    assert Path(root).is_relative_to(tmp_path) and int(n) == 100


def test_sdist_holds_the_tests_and_what_they_import(tmp_path):
    """setuptools' default sdist holds tests/test_*.py but not conftest.py, the helpers they
    import or tests/reference/, so its tests could not even be collected; nor configs/."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to copy the tracked files from")
    if _setuptools_version() < (77,):
        pytest.skip("the build backend pyproject.toml asks for (setuptools>=77) is not installed")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    src = tmp_path / "src"
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    code = "import sys; from setuptools.build_meta import build_sdist; print(build_sdist(sys.argv[1]))"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dist")], cwd=src, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import tarfile

    with tarfile.open(tmp_path / "dist" / proc.stdout.split()[-1]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    wanted = {n for n in filter(None, tracked.decode().split("\0"))
              if n.startswith(("tests/", "configs/", "unetzoo/")) or n in ("Makefile", "pyproject.toml", "README.md")}
    assert wanted <= names, sorted(wanted - names)[:10]
    assert not any("__pycache__" in n for n in names)
