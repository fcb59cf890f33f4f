"""The background ``cmcl server`` (flows.background): a verb starts it when none runs and says so,
later verbs reuse it, ``cmcl server stop`` ends it, an idle one stops itself, and no process is
left behind. The end-to-end tests use their own PREFECT_HOME and never the session's API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flows import api, background

REPO = Path(__file__).resolve().parents[2]
CMCL = (shutil.which("cmcl") or f"{sys.executable} -m flows.cli").split()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _env(home: Path, **extra: str) -> dict[str, str]:
    """A cmcl process's environment with no Prefect API configured, reuse on, its own PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(home), CMCL_REUSE_SERVER="1", PYTHONPATH=str(REPO), **extra)
    return env


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A PREFECT_HOME of its own; at the end any server recorded there is stopped and checked gone."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("PREFECT_HOME", str(h))
    yield h
    record = h / api.STATE_FILE
    pids = []
    if record.is_file():
        state = json.loads(record.read_text())
        pids = [p for p in (state.get("pid"), state.get("owner")) if p]
        background.stop_server()
    for pid in pids:
        assert _gone(pid), f"process {pid} left behind"


def test_idle_time_counts_from_the_last_verb_and_dead_verbs_are_dropped(tmp_path):
    d = background.clients_dir(tmp_path)
    assert background.idle_seconds(since=100.0, home=tmp_path, now=160.0) == 60.0  # no verb ever ran
    mine = background.register_client(home=tmp_path)  # this (live) process
    assert background.idle_seconds(since=100.0, home=tmp_path) == 0.0
    mine.unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    background.register_client(pid=dead.pid, home=tmp_path)  # a verb killed before it could clean up
    now = time.time()
    idle = background.idle_seconds(since=0.0, home=tmp_path, now=now + 5)
    assert list(d.iterdir()) == [] and 4.0 <= idle <= 6.0  # dropped; idle since it was noticed


def test_wait_or_idle_returns_on_exit_or_once_idle(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        background.register_client(pid=sleeper.pid, home=tmp_path)  # a live verb: never idle
        quick = subprocess.Popen([sys.executable, "-c", "pass"])
        assert background.wait_or_idle(quick, idle_s=0.2, poll_s=0.05, home=tmp_path) == "exited"
        t0 = time.monotonic()
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            sleeper.kill()
            sleeper.wait()
            assert background.wait_or_idle(other, idle_s=0.5, poll_s=0.05, home=tmp_path) == "idle"
            assert 0.4 < time.monotonic() - t0 < 10
        finally:
            other.kill()
            other.wait()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_no_autostart_when_reuse_is_off_or_an_api_is_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.setenv("CMCL_REUSE_SERVER", "0")
    assert background.connect() == (None, False) and not background.may_need_server()
    monkeypatch.setenv("CMCL_REUSE_SERVER", "1")
    assert api.api_configured()  # the session's harness server (tests/flows/conftest.py)
    assert background.connect() == (None, False) and not background.may_need_server()
    monkeypatch.delenv("PREFECT_API_URL")
    assert background.may_need_server()
    (tmp_path / "profiles.toml").write_text('[profiles.mine]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n')
    assert not background.may_need_server()
    assert not list(tmp_path.glob("cmcl-server*"))  # nothing was started
    monkeypatch.setenv(background.IDLE_ENV, "soon")
    with pytest.raises(ValueError, match="CMCL_SERVER_IDLE='soon'"):
        background.idle_timeout()


def test_stop_never_signals_a_recorded_pid_that_runs_another_program(home):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # e.g. a reused pid
    try:
        api.record_server("http://127.0.0.1:9/api", other.pid, owner=other.pid, path=home / api.STATE_FILE)
        assert background.stop_server() is None and other.poll() is None
        assert not (home / api.STATE_FILE).exists()  # a record of nothing running is dropped
        (home / background.STARTING_FILE).write_text(str(other.pid))  # "a server still starting"
        assert background.stop_server() is None and other.poll() is None
    finally:
        other.kill()
        other.wait()


def _cmcl(*args: str, env: dict[str, str], cwd: Path) -> str:
    out = subprocess.run([*CMCL, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    return text


def test_first_verb_starts_a_background_server_the_next_reuses_it_and_stop_ends_it(home, tmp_path):
    f = tmp_path / "c.smi"
    f.write_text("CCO ethanol\n")
    env = _env(home, PREFECT_LOGGING_LEVEL="WARNING", CMCL_SERVER_IDLE="120")  # were the test killed: gone in 2 min
    first = _cmcl("compounds", str(f), "--store", str(tmp_path / "s"), env=env, cwd=tmp_path)
    started = [ln for ln in first.splitlines() if "started a background `cmcl server`" in ln]
    assert len(started) == 1 and "`cmcl server stop`" in started[0] and "after 2 min" in started[0], first
    assert "Starting temporary server" not in first, first
    state = json.loads((home / api.STATE_FILE).read_text())
    assert state["api_url"] in started[0]
    assert not _gone(state["pid"]) and not _gone(state["owner"])  # it outlives the verb
    second = _cmcl("compounds", str(f), "--store", str(tmp_path / "s"), env=env, cwd=tmp_path)
    assert f"the running `cmcl server` at {state['api_url']}" in second and "started" not in second, second
    assert list(background.clients_dir(home).iterdir()) == []  # both verbs unregistered at exit
    stopped = _cmcl("server", "stop", env=env, cwd=tmp_path)
    assert f"stopped the `cmcl server` at {state['api_url']}" in stopped, stopped
    assert _gone(state["pid"]) and _gone(state["owner"]) and not (home / api.STATE_FILE).exists()
    assert "no `cmcl server` is running" in _cmcl("server", "stop", env=env, cwd=tmp_path)


def test_a_server_with_an_idle_timeout_stops_itself_once_no_verb_uses_it(home, tmp_path):
    verb = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    background.register_client(pid=verb.pid, home=home)  # a verb using it from the start: it stays up
    proc = subprocess.Popen([*CMCL, "server", "--port", "0", "--idle-timeout", "2"], env=_env(home), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while api.running_server(path=home / api.STATE_FILE) is None:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.2)
        pid = json.loads((home / api.STATE_FILE).read_text())["pid"]
        time.sleep(3)
        assert proc.poll() is None  # more than 2 s, but a verb is alive
        verb.kill()
        verb.wait()
        t0 = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "no cmcl command for 2 s: stopping" in out, out
        assert time.monotonic() - t0 >= 1.0  # it waited for the idle period after the verb ended
        assert _gone(pid) and not (home / api.STATE_FILE).exists()
    finally:
        for p in (verb, proc):
            if p.poll() is None:
                p.kill()
                p.wait()
