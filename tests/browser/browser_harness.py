"""Helpers of the real-browser tests: a private JupyterLab server, node drivers, and
stopping every process they start.

Every process started here is stopped here, by pid: the server (after a clean
``/api/shutdown``, which also ends its kernels), and whatever the server or a driver left
behind (kernels, Chromium) found as descendants in ``/proc``.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...)."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_pids(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM ``pids``, then SIGKILL those still alive after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            if _alive(pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)


def run_node(script: Path, payload: dict, tools: dict[str, str], timeout: float) -> dict:
    """Run a node driver with ``payload`` (JSON on stdin); it prints one JSON object last.

    The driver closes its browser itself (and Playwright kills it should node exit early);
    on a timeout the whole tree, Chromium included, is killed here."""
    proc = subprocess.Popen(["node", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **tools})
    try:
        out, err = proc.communicate(json.dumps(payload), timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_pids([*descendants(proc.pid), proc.pid])
        out, err = proc.communicate()
        pytest.fail(f"{script.name} timed out after {timeout} s\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    if proc.returncode != 0:
        pytest.fail(f"{script.name} failed ({proc.returncode})\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 with a random port and token, its own config,
    data, runtime, settings and workspace folders (nothing of the user's is read)."""

    def __init__(self, root: Path, home: Path):
        self.root, self.port, self.token = root, _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
               "JUPYTER_DATA_DIR": str(home / "data"), "IPYTHONDIR": str(home / "ipython"), "PYTHONUNBUFFERED": "1"}
        # start the notebook's kernel without asking; never ask about or fetch news
        for plugin, values in (("notebook-extension/tracker", {"autoStartDefaultKernel": True}),
                               ("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False})):
            path = home / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.log = (home / "jupyterlab.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={home / 'settings'}",
             f"--LabApp.workspaces_dir={home / 'workspaces'}", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self._wait_ready(timeout=90)

    def api(self, path: str, method: str = "GET") -> bytes:
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}; see {self.log.name}")
            try:
                json.loads(self.api("/api/status"))
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer within {timeout} s; see {self.log.name}")

    def stop(self) -> None:
        """Shut down cleanly (kernels included), then make sure nothing it started lives on."""
        started = [*descendants(self.proc.pid), self.proc.pid]
        try:
            self.api("/api/shutdown", method="POST")
            self.proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        kill_pids(started)
        self.proc.wait(timeout=10)
        self.log.close()
        self.leftover = [p for p in started if _alive(p)]
