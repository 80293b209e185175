"""The README's module map ("Where things are") names every file of the package, and
only files that exist."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mapped_paths() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Where things are", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(seqlearn/[^`\s]*)`", section))


def package_files() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / "seqlearn").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_every_file_of_the_package_is_in_the_readme_map_and_every_entry_exists():
    mapped = mapped_paths()
    folders = {m for m in mapped if m.endswith("/")}
    assert "seqlearn/" not in folders, "the map lists folders inside the package, not the package itself"
    files = package_files()
    unmapped = {f for f in files if f not in mapped and not any(f.startswith(d) for d in folders)}
    assert not unmapped, f"files missing from the README module map: {sorted(unmapped)}"
    missing = {m for m in mapped - folders if m not in files} | {d for d in folders if not (ROOT / d).is_dir()}
    assert not missing, f"README module map entries that do not exist: {sorted(missing)}"
