"""The warm ``cmcl`` helper (flows.warm) and the entry point that uses it (flows.launch): a flow verb
starts one and says so; later commands run in its forked children with their own arguments, folder,
environment, output and exit status; Ctrl-C reaches the child; ``cmcl server stop`` ends it, an idle
one stops itself, and no process is left behind. Each end-to-end test has its own PREFECT_HOME, so its
helper is its own (the key includes it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flows import background, launch, warm

REPO = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("cmcl")
#: the installed `cmcl` script (its entry point is flows.launch:main), else the same entry point by module
CMCL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "flows.launch"]


def test_the_verb_is_the_first_argument_after_the_group_options():
    assert launch.verb_of(["-q", "--debug", "ingest", "x", "--store", "s"]) == "ingest"
    assert launch.verb_of(["--help"]) is None and launch.verb_of([]) is None
    assert launch.verb_of(["compounds", "-q"]) == "compounds"


def test_a_helper_is_keyed_by_the_import_time_environment_and_the_source(tmp_path, monkeypatch):
    env = {"PATH": "/bin", "HOME": "/home/u", "PREFECT_HOME": "/h"}
    key = launch.helper_key(env, stamp="s")
    # the command's own variables are applied in the child: same helper
    assert launch.helper_key({**env, "PATH": "/usr/bin", "CMCL_STORE": "/x", "TERM": "dumb"}, stamp="s") == key
    # read at import (numba, Prefect) or naming another Prefect home: another helper
    assert launch.helper_key({**env, "NUMBA_NUM_THREADS": "1"}, stamp="s") != key
    assert launch.helper_key({**env, "PREFECT_HOME": "/other"}, stamp="s") != key
    assert launch.helper_key(env, stamp="t") != key
    # what a command inherits (a batch job's CPUs, limits, control groups) would come from the helper instead
    cpus = os.sched_getaffinity(0)
    if len(cpus) > 1:
        try:
            os.sched_setaffinity(0, {min(cpus)})
            assert launch.helper_key(env, stamp="s") != key
        finally:
            os.sched_setaffinity(0, cpus)
        assert launch.helper_key(env, stamp="s") == key
    # the source stamp follows every file of the packages
    for pkg in ("flows", "pipeline", "cmcl_model", "schemas"):
        (tmp_path / pkg).mkdir()
    src = tmp_path / "pipeline" / "mod.py"
    src.write_text("x = 1\n")
    first = launch.code_stamp(tmp_path)
    assert launch.code_stamp(tmp_path) == first
    src.write_text("x = 22\n")
    assert launch.code_stamp(tmp_path) != first
    (tmp_path / "pipeline" / "__pycache__").mkdir()  # compiled files are not source
    (tmp_path / "pipeline" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    second = launch.code_stamp(tmp_path)
    assert launch.code_stamp(tmp_path) == second
    monkeypatch.setenv(launch.WARM_ENV, "0")
    assert not launch.warm_enabled()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # ended; its parent may not reap it
    except psutil.NoSuchProcess:
        return True


def _wait_status(pid: int, *wanted: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (status := psutil.Process(pid).status()) not in wanted:  # NoSuchProcess: it ended before
        assert time.monotonic() < deadline, status
        time.sleep(0.02)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_LOGGING_LEVEL"))}
    env.update({"PREFECT_HOME": str(home), "CMCL_REUSE_SERVER": "1", "CMCL_WARM": "1", "PYTHONPATH": str(REPO),
                "CMCL_SERVER_IDLE": "120", **extra})  # were the test killed: gone in 2 min
    return env


def _helpers(home: Path) -> list[dict]:
    return warm.helpers(str(home.resolve()))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A PREFECT_HOME of its own; at the end its helpers and server are stopped and checked gone."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("PREFECT_HOME", str(h))
    yield h
    pids = [int(r["pid"]) for r in _helpers(h)]
    warm.stop_helpers()
    background.stop_server()
    for pid in pids:
        assert _gone(pid), f"helper {pid} left behind"


def _run(args, env, cwd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CMCL, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300, **kw)


def _wait_ready(home: Path, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [r for r in _helpers(home) if r.get("state") == "ready"]
        if ready:
            return ready[0]
        time.sleep(0.1)
    raise AssertionError("no helper got ready")


def _served(rec: dict) -> list[str]:
    """The commands the helper's log says it ran."""
    d = launch.runtime_dir()
    return [ln.split(": ", 1)[1] for ln in (d / f"{rec['key']}.log").read_text().splitlines() if ": cmcl " in ln]


def test_a_flow_verb_starts_a_helper_and_later_commands_run_in_it_as_their_own(home, tmp_path):
    (tmp_path / "c.smi").write_text("CCO ethanol\nc1ccccc1O phenol\n")
    env = _env(home)
    first = _run(["compounds", "c.smi", "--store", "s0"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    lines = [ln for ln in first.stderr.splitlines() if "warm helper" in ln]
    assert len(lines) == 1 and "`cmcl server stop`" in lines[0] and "after 2 min" in lines[0], first.stderr
    rec = _wait_ready(home)
    assert not _gone(rec["pid"])
    # the child takes the command's folder (relative paths), environment (CMCL_STORE: the default store)
    # and output (a pipe here); -q reaches Prefect's logging, set up in the helper before the command
    quiet = _run(["-q", "compounds", "c.smi"], {**env, "CMCL_STORE": str(tmp_path / "envstore")}, tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "2 read, 2 standardized" in quiet.stdout and (tmp_path / "envstore" / "tables" / "compounds.parquet").is_file()
    assert "Beginning flow run" not in quiet.stderr and "warm helper" not in quiet.stderr, quiet.stderr
    loud = _run(["compounds", "c.smi", "--store", "s1"], env, tmp_path)
    assert loud.returncode == 0 and "Beginning flow run" in loud.stderr, loud.stderr
    assert (tmp_path / "s1" / "tables" / "graphs.parquet").is_file()
    # a failing command's one-line error and exit status come back unchanged
    bad = _run(["compounds", "missing.smi", "--store", "s2"], env, tmp_path)
    assert bad.returncode != 0 and "missing.smi" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    inproc = _run(["compounds", "missing.smi", "--store", "s2"], {**env, "CMCL_WARM": "0"}, tmp_path)
    assert (bad.returncode, bad.stderr.splitlines()[-1]) == (inproc.returncode, inproc.stderr.splitlines()[-1])
    assert _served(rec) == ["cmcl -q compounds c.smi", "cmcl compounds c.smi --store s1",
                            "cmcl compounds missing.smi --store s2"]
    # `cmcl server stop` ends the helper too
    stopped = _run(["server", "stop"], env, tmp_path)
    assert "stopped 1 warm cmcl helper" in stopped.stdout, stopped.stdout
    assert _gone(rec["pid"]) and not (launch.runtime_dir() / f"{rec['key']}.sock").exists()
    assert not _helpers(home)


def test_ctrl_c_reaches_the_helpers_child_a_stopped_helper_finishes_its_command_and_an_idle_one_stops(home, tmp_path):
    from pipeline.synthetic import generate
    from pipeline.store import Store

    env = _env(home, CMCL_SERVER_IDLE="6")
    (tmp_path / "c.smi").write_text("CCO ethanol\n")
    assert _run(["-q", "compounds", "c.smi", "--store", "s0"], env, tmp_path).returncode == 0
    rec = _wait_ready(home)
    plate = generate(tmp_path / "p", plate_id="UP", n_wells=4, sites=2, size=128, seed=1)
    for attempt in range(3):  # a loaded machine can let the small plate finish before Ctrl-C lands: again
        store = tmp_path / f"store{attempt}"
        proc = subprocess.Popen([*CMCL, "-q", "ingest", str(plate), "--store", str(store), "--crop-size", "24"],
                                env=env, cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        staged = store / ".staging" / "UP" / "plate.ome.zarr"
        deadline = time.monotonic() + 120
        while not staged.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: it reaches the `cmcl` process only
        out, _ = proc.communicate(timeout=60)
        if not Store(store).table_path("ledger").is_file():
            break
    assert proc.returncode == 130 and "rerun the same command" in out, out
    child = int([ln for ln in (launch.runtime_dir() / f"{rec['key']}.log").read_text().splitlines()
                 if f"--store {store}" in ln][0].split("] ")[1].split(":")[0])
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child)
    # Ctrl-Z and fg on a command the helper runs; then `cmcl server stop` while it runs: the helper
    # stops listening at once, the command finishes, then the helper exits
    log = launch.runtime_dir() / f"{rec['key']}.log"
    fresh = tmp_path / "store_stop"  # a whole plate: seconds of work, long enough to stop and resume it
    # a process group of its own whose parent (this test) is in the same session, as a shell's job: the
    # kernel discards SIGTSTP sent to an orphaned group (pytest's own, under nohup or CI), so Ctrl-Z would not stop it
    proc = subprocess.Popen([*CMCL, "-q", "ingest", str(plate), "--store", str(fresh), "--crop-size", "24"], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0)
    deadline = time.monotonic() + 60
    while f"--store {fresh}" not in log.read_text():  # the helper has forked its child
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    child = int([ln for ln in log.read_text().splitlines() if f"--store {fresh}" in ln][0].split("] ")[1].split(":")[0])
    deadline = time.monotonic() + 10
    while psutil.Process(child).name() != "cmcl ingest":  # what top and pgrep show, once the child has named itself
        assert time.monotonic() < deadline, psutil.Process(child).name()
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGTSTP)  # Ctrl-Z stops the child too; SIGCONT (fg) resumes both
    _wait_status(child, psutil.STATUS_STOPPED)
    os.kill(proc.pid, signal.SIGCONT)
    _wait_status(child, psutil.STATUS_RUNNING, psutil.STATUS_SLEEPING, psutil.STATUS_DISK_SLEEP)
    assert warm.stop_helpers(timeout=120) == 1
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and Store(fresh).table_path("ledger").is_file(), out
    assert _gone(rec["pid"]) and not (launch.runtime_dir() / f"{rec['key']}.sock").exists()
    # the next command runs in its own process again, and starts a new helper
    again = _run(["-q", "compounds", "c.smi", "--store", "s3"], env, tmp_path)
    assert again.returncode == 0 and "starting a warm helper" in again.stderr, again.stderr
    rec = _wait_ready(home)
    # no command for 6 s: the helper stops and removes its socket
    deadline = time.monotonic() + 60
    while not _gone(rec["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gone(rec["pid"]) and not (launch.runtime_dir() / f"{rec['key']}.sock").exists()


def test_no_helper_is_started_when_turned_off(home, tmp_path):
    (tmp_path / "c.smi").write_text("CCO ethanol\n")
    out = _run(["-q", "compounds", "c.smi", "--store", "s"], _env(home, CMCL_WARM="0"), tmp_path)
    assert out.returncode == 0 and "warm helper" not in out.stderr, out.stderr
    time.sleep(0.5)
    assert not _helpers(home)


def test_a_command_whose_working_folder_is_gone_runs_in_its_own_process(tmp_path, monkeypatch):
    import socket

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a helper that would accept
    listener.bind(str(tmp_path / "h.sock"))
    listener.listen(1)
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    try:
        assert launch._run_warm(["verify"], tmp_path / "h.sock") is None  # nothing sent: run here
    finally:
        listener.close()
