"""`make ui` starts lean (one uvicorn worker, no job runner), says which address it binds,
and leaves no process behind when stopped as a terminal (Ctrl-C) or a service manager
(SIGTERM to make) would stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, free_port

pytestmark = pytest.mark.slow


def marked_processes(marker: str) -> dict[int, str]:
    """pid -> command line of every process whose environment carries the marker."""
    found = {}
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone meanwhile, or a zombie
            continue
    return found


def start_ui(tmp_path: Path, marker: str, port: int) -> tuple[subprocess.Popen, Path]:
    """`make ui` with PORT exported (not on the command line), as a shell profile might."""
    log = tmp_path / "ui.log"
    key, value = marker.split("=")
    env = {**os.environ, key: value, "PORT": str(port)}
    env.pop("HOST", None)
    with open(log, "w") as out:
        make = subprocess.Popen(["make", "--no-print-directory", "ui", f"TRACKING=sqlite:///{tmp_path / 'mlflow.db'}"],
                                cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 240
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return make, log
        except OSError:
            assert make.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)


def assert_all_gone(make: subprocess.Popen, marker: str) -> None:
    try:
        make.wait(90)
    finally:
        deadline = time.monotonic() + 30
        while marked_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = marked_processes(marker)
        for pid in left:  # clean up after a failure, then report it
            os.kill(pid, signal.SIGKILL)
    assert not left, f"left behind: {left}"


@pytest.mark.parametrize("stop", ["sigterm_to_make", "ctrl_c_to_the_foreground_group"])
def test_make_ui_is_lean_says_its_address_and_leaves_nothing_behind(tmp_path: Path, stop: str) -> None:
    marker = f"UI_TEST_MARKER={uuid.uuid4().hex}"
    port = free_port()
    make, log = start_ui(tmp_path, marker, port)
    try:
        time.sleep(3)  # MLflow started its job runner a moment after the server
        running = marked_processes(marker)
        printed = log.read_text()
        assert f"MLflow UI on http://127.0.0.1:{port}/" in printed
        assert f"binding 127.0.0.1:{port} (PORT={port} from the environment" in printed
        assert not [cmd for cmd in running.values() if "huey" in cmd or "_job_runner" in cmd], running
        assert len([cmd for cmd in running.values() if "-m uvicorn" in cmd or "multiprocessing" in cmd]) == 1, running
    finally:
        if stop == "sigterm_to_make":
            os.kill(make.pid, signal.SIGTERM)  # a service manager stopping its main process
        else:
            os.killpg(make.pid, signal.SIGINT)  # Ctrl-C: the terminal signals its foreground group
        assert_all_gone(make, marker)
