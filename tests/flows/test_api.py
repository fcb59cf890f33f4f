"""A running ``cmcl server`` replaces Prefect's temporary API (flows.api): found through the record
``cmcl server`` keeps in ``$PREFECT_HOME``, used only when healthy, never over a user's own API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path

import pytest

from flows import api

REPO = Path(__file__).resolve().parents[2]


class _FakePrefect(BaseHTTPRequestHandler):
    """Answers like a Prefect API: ``/api/health`` -> true, ``/api/admin/version`` -> the version."""

    served_version = version("prefect")
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).requests.append(self.path)
        body = {"/api/health": True, "/api/admin/version": type(self).served_version}.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    """A loopback HTTP server answering like a healthy Prefect API; yields its API URL."""
    _FakePrefect.served_version = version("prefect")
    _FakePrefect.requests = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FakePrefect)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/api"
    srv.shutdown()
    srv.server_close()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_record_is_found_while_healthy_and_dropped_when_its_process_is_gone(tmp_path, fake_server):
    path = tmp_path / api.STATE_FILE
    assert api.running_server(path=path) is None  # no record
    api.record_server(fake_server, os.getpid(), path=path)
    assert json.loads(path.read_text())["prefect_version"] == version("prefect")
    assert api.running_server(path=path) == fake_server
    assert _FakePrefect.requests == ["/api/health", "/api/admin/version"]
    api.forget_server(os.getpid() + 1, path=path)  # another server's pid: the record stays
    assert path.is_file()
    api.forget_server(os.getpid(), path=path)
    assert not path.exists()
    # a record whose process died (killed before it could clean up) is ignored and removed
    api.record_server(fake_server, _dead_pid(), path=path)
    assert api.running_server(path=path) is None and not path.exists()


def test_unhealthy_incompatible_or_remote_servers_are_not_used(tmp_path, fake_server):
    from flows.serve import free_port

    path = tmp_path / api.STATE_FILE
    api.record_server(f"http://127.0.0.1:{free_port()}/api", os.getpid(), path=path)  # nothing listens
    assert api.running_server(path=path) is None
    assert path.is_file()  # its process lives: not ours to remove
    major = int(version("prefect").split(".")[0])
    for served in (f"{major + 1}.0.0", f"{major - 1}.99.0", "0.0.1"):  # other major, or older
        _FakePrefect.served_version = served
        api.record_server(fake_server, os.getpid(), path=path)
        assert api.running_server(path=path) is None, served
    api.record_server("http://10.255.255.1:4200/api", os.getpid(), path=path)  # not loopback: never contacted
    t0 = time.monotonic()
    assert api.running_server(path=path) is None and time.monotonic() - t0 < 0.5
    path.write_text("{not json")
    assert api.running_server(path=path) is None
    assert api.client_url("0.0.0.0", 4200) == "http://127.0.0.1:4200/api"
    assert api.client_url("::1", 4200) == "http://[::1]:4200/api"
    assert api.client_url("192.0.2.7", 4200) is None


_PROBE = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from flows.api import use_running_server
used = use_running_server()
from prefect.settings import PREFECT_API_URL
print(json.dumps({"used": used, "setting": PREFECT_API_URL.value(), "env": os.environ.get("PREFECT_API_URL")}))
"""


def _probe(home: Path, **env: str) -> dict:
    """use_running_server() in a fresh process (as a cmcl verb calls it): what it chose."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    base.update({"PREFECT_HOME": str(home), "CMCL_REUSE_SERVER": "1", **env})
    out = subprocess.run([sys.executable, "-c", _PROBE, str(REPO)], env=base, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_fresh_process_uses_the_recorded_server_unless_an_api_is_configured(tmp_path, fake_server):
    home = tmp_path / "home"
    assert _probe(home) == {"used": None, "setting": None, "env": None}  # nothing recorded: ephemeral
    api.record_server(fake_server, os.getpid(), path=home / api.STATE_FILE)
    assert _probe(home) == {"used": fake_server, "setting": fake_server, "env": fake_server}
    assert _probe(home, CMCL_REUSE_SERVER="0")["setting"] is None  # turned off: ephemeral
    mine = "http://127.0.0.1:9/api"
    assert _probe(home, PREFECT_API_URL=mine) == {"used": None, "setting": mine, "env": mine}  # the user's wins
    (home / "profiles.toml").write_text(f'active = "mine"\n[profiles.mine]\nPREFECT_API_URL = "{mine}"\n')
    assert _probe(home) == {"used": None, "setting": mine, "env": None}  # ... also from a Prefect profile
    (home / "profiles.toml").unlink()
    api.record_server(fake_server, _dead_pid(), path=home / api.STATE_FILE)  # its server was killed
    assert _probe(home) == {"used": None, "setting": None, "env": None}


def _flow_runs(url: str, name: str) -> set[str]:
    body = json.dumps({"flows": {"name": {"any_": [name]}}, "limit": 200}).encode()
    req = urllib.request.Request(f"{url}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=30) as r:
        return {run["id"] for run in json.loads(r.read())}


def test_cmcl_verb_runs_its_flow_on_the_recorded_server(tmp_path, monkeypatch):
    """End to end: `cmcl compounds` in a new process finds the (harness's) server through the
    record, says so, runs its flow there and starts no temporary server."""
    import shutil

    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()  # the session's harness server (tests/flows/conftest.py)
    home = tmp_path / "home"
    api.record_server(url, os.getpid(), path=home / api.STATE_FILE)  # (its server is this process's child)
    before = _flow_runs(url, "compounds")
    f = tmp_path / "c.smi"
    f.write_text("CCO ethanol\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(home), CMCL_REUSE_SERVER="1", PREFECT_LOGGING_LEVEL="INFO")
    cmcl = shutil.which("cmcl") or f"{sys.executable} -m flows.cli"
    try:
        out = subprocess.run([*cmcl.split(), "compounds", str(f), "--store", str(tmp_path / "s")], env=env,
                             capture_output=True, text=True, timeout=300)
    finally:  # had it not found the record's server, it would have started one in the background: stop it
        record = home / api.STATE_FILE
        if not record.is_file() or json.loads(record.read_text())["pid"] != os.getpid():
            from flows.background import stop_server

            monkeypatch.setenv("PREFECT_HOME", str(home))
            stop_server()
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert f"Prefect API: the running `cmcl server` at {url}" in text, text
    assert "Starting temporary server" not in text, text
    assert len(_flow_runs(url, "compounds") - before) == 1, text


_HEARTBEAT_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import prefect.flow_engine as engine
from prefect import flow
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from typer.testing import CliRunner

from flows import api
from flows.cli import app

seen, real = [], engine._send_heartbeats


def spy(run_engine, *args, **kwargs):  # the heartbeat interval of every flow run (None: no thread)
    seen.append(run_engine.heartbeat_seconds)
    return real(run_engine, *args, **kwargs)


engine._send_heartbeats = spy


@flow
def child():
    return 1


@flow
def parent():
    return child() + child()


out = {}
parent()
out["default"], seen[:] = list(seen), []
with api.no_flow_heartbeats():
    parent()
out["off"], seen[:] = list(seen), []
with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}), api.no_flow_heartbeats():
    parent()
out["user"], seen[:] = list(seen), []
result = CliRunner().invoke(app, ["--quiet", "compounds", sys.argv[2], "--store", sys.argv[3]])
assert result.exit_code == 0, result.output
out["cli"] = list(seen)
print(json.dumps(out))
"""


def test_flows_of_the_cli_run_without_heartbeats_unless_the_user_set_a_frequency(tmp_path):
    """Prefect 3.9 starts a heartbeat thread per flow run and joins it at the run's end (up to 1 s);
    the CLI's flows start none. In a fresh process (the session's own flows run without them too)."""
    from prefect.settings import PREFECT_API_URL

    f = tmp_path / "c.smi"
    f.write_text("CCO ethanol\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_FLOWS")}
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()  # the session's harness server
    out = subprocess.run([sys.executable, "-c", _HEARTBEAT_PROBE, str(REPO), str(f), str(tmp_path / "s")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"default": [180, 180, 180],  # Prefect's default: parent and both subflows
                    "off": [None, None, None], "user": [60, 60, 60], "cli": [None]}, seen
