"""Fixtures of the real-browser tests: the tools (Chromium, playwright-core) and the
artifacts folder.  The helpers are in ``browser_harness``."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from browser_harness import REPO

SETUP = REPO / ".ci" / "browser_setup.sh"
ARTIFACTS = REPO / "artifacts" / "browser"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def browser_tools() -> dict[str, str]:
    """Environment for the node drivers: where playwright-core and Chromium are.

    In CI (``CI=true``) the setup script installs them; elsewhere the tests are skipped
    when they are missing, with the command that installs them.
    """
    if _in_ci():
        result = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            pytest.fail(f"{SETUP} failed:\n{result.stderr[-4000:]}")
        module = result.stdout.strip().splitlines()[-1]
    else:
        module = str(Path(os.environ.get("SEQLEARN_BROWSER_CACHE", Path.home() / ".cache" / "seqlearn-browser"))
                     / "node_modules" / "playwright-core")
        missing = [what for what, ok in (("/usr/bin/chromium", Path("/usr/bin/chromium").exists()),
                                         ("node", shutil.which("node") is not None),
                                         ("playwright-core", Path(module, "package.json").exists())) if not ok]
        if missing:
            pytest.skip(f"browser test needs {', '.join(missing)}: run `bash .ci/browser_setup.sh` (CI=true does it)")
    return {"SEQLEARN_PLAYWRIGHT_CORE": module, "SEQLEARN_CHROMIUM": "/usr/bin/chromium"}


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
