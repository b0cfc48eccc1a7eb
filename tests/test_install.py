"""Installing the package the ways users do: every way ends with the compiled op, or stops at
install time saying what to run; never a package silently without its kernels.

Each test works on a copy of the tracked source tree, as a fresh clone has it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIP = [sys.executable, '-m', 'pip', '--disable-pip-version-check']


def _tracked_copy(destination: Path) -> Path:
    """The repository's tracked files copied to ``destination`` (what a clone holds)."""
    names = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split('\0')
    for name in filter(None, names):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((REPO / name).read_bytes())
    return destination


@pytest.fixture(scope='module')
def source(tmp_path_factory) -> Path:
    return _tracked_copy(tmp_path_factory.mktemp('clone'))


@pytest.mark.parametrize('command', [
    ['install', '--dry-run', '--no-deps', '.'],
    ['install', '--dry-run', '--no-deps', '-e', '.'],
    ['wheel', '--no-deps', '-w', 'wheels', '.'],
], ids=['install', 'install-editable', 'wheel'])
def test_build_isolation_stops_with_instructions(source: Path, command: list[str]) -> None:
    """pip's default build isolation hides the installed torch: the build must stop and say
    what to run, not install the package without its op."""
    result = subprocess.run(PIP + command, cwd=source, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert 'torch is not importable here' in output, output
    assert 'pip install --no-build-isolation .' in output, output
    assert not (source / 'wheels').exists() or not any((source / 'wheels').iterdir())


def test_wheel_without_isolation_carries_the_op(source: Path, tmp_path: Path) -> None:
    """A wheel built from the source tree holds the compiled op, and the package installed from
    it (not this checkout) loads it."""
    wheels = tmp_path / 'wheels'
    subprocess.run(PIP + ['wheel', '--no-build-isolation', '--no-deps', '-q', '-w', str(wheels),
                          '.'], cwd=source, check=True, capture_output=True)
    (wheel,) = wheels.glob('anyup_neck-*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith('anyup_neck/ops/_C') and n.endswith('.so') for n in names), names

    target = tmp_path / 'site'
    subprocess.run(PIP + ['install', '--no-deps', '-q', '--target', str(target), str(wheel)],
                   check=True, capture_output=True)
    probe = ('import anyup_neck, anyup_neck.ops.extension as e; '
             'print(anyup_neck.__file__); print(e.available(), e.LOAD_ERROR)')
    result = subprocess.run([sys.executable, '-c', probe], cwd=tmp_path, check=True,
                            capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': str(target)})
    location, loaded = result.stdout.splitlines()
    assert Path(location).is_relative_to(target), location
    assert loaded == 'True None', result.stdout


def test_sdist_carries_every_source(source: Path, tmp_path: Path) -> None:
    """An sdist (what `python -m build` compiles from) holds every C++/CUDA source and header."""
    subprocess.run([sys.executable, 'setup.py', '-q', 'sdist', '-d', str(tmp_path)], cwd=source,
                   check=True, capture_output=True)
    (archive,) = tmp_path.glob('anyup_neck-*.tar.gz')
    with tarfile.open(archive) as tar:
        packed = {name.split('/', 1)[1] for name in tar.getnames() if '/csrc/' in name}
    csrc = source / 'anyup_neck' / 'ops' / 'csrc'
    expected = {str(p.relative_to(source)) for p in csrc.rglob('*') if p.is_file()}
    assert expected and expected <= packed, sorted(expected - packed)
