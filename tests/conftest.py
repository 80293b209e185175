"""Shared test fixtures: a throwaway plugin-distribution builder and the ../shared data path."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seqlearn import registry

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _cache_in_a_temporary_folder(tmp_path_factory):
    """Corpus caches (``cache_dir`` left at its default, under $XDG_CACHE_HOME) go to a
    temporary folder, also in the subprocesses tests start, never to the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture
def plugin_env(tmp_path, monkeypatch):
    """Build and pip-install real plugin distributions into a fresh folder on sys.path.

    Returns ``install(dist_name, version, modules: {module_name: source}, entry_points:
    {group: {name: "module:attr"}})``.  Installing with ``pip --target`` writes the same
    files and dist-info a normal install writes, without touching the test virtualenv.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    registry.refresh()

    def install(dist: str, version: str, modules: dict[str, str], entry_points: dict[str, dict[str, str]]) -> None:
        src = tmp_path / f"src-{dist}"
        src.mkdir()
        eps = "".join(
            f'\n[project.entry-points."{group}"]\n' + "".join(f'"{n}" = "{v}"\n' for n, v in names.items())
            for group, names in entry_points.items()
        )
        (src / "pyproject.toml").write_text(
            textwrap.dedent(
                f"""\
                [build-system]
                requires = ["setuptools"]
                build-backend = "setuptools.build_meta"
                [project]
                name = "{dist}"
                version = "{version}"
                [tool.setuptools]
                py-modules = {sorted(modules)!r}
                """
            )
            + eps
        )
        for mod, code in modules.items():
            (src / f"{mod}.py").write_text(textwrap.dedent(code))
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
             "--target", str(site), str(src)],
            check=True,
            capture_output=True,
        )

    yield install
    for mod in [m for m, v in sys.modules.items() if getattr(v, "__file__", None) and str(site) in str(v.__file__)]:
        del sys.modules[mod]
    monkeypatch.undo()
    registry.refresh()
