"""The background ``cmcl server``: started by the first verb that needs one, stopped when idle.

With no Prefect API configured, a verb that runs a flow would otherwise start Prefect's temporary
API server in a subprocess and wait for it (8-13 s on the project's 2-core machine) every time.
Instead :func:`autostart` starts ``cmcl server --port 0 --idle-timeout N`` detached from the
terminal (its own session, output to ``$PREFECT_HOME/cmcl-server.log``), waits until it answers,
and every later verb reuses it (:mod:`flows.api`), so each pays only its own imports and flow run.

Lifetime:

- every verb using the server registers its pid in ``$PREFECT_HOME/cmcl-server.clients/``
  (:func:`register_client`, removed at exit; a killed verb's file is dropped once its pid is gone);
- a server started with an idle timeout stops itself once no registered verb has been alive for
  that long (:func:`idle_seconds`, polled by :func:`wait_or_idle`): ``CMCL_SERVER_IDLE`` seconds,
  default 1800; a server started by hand (``cmcl server``) never idles out unless told to;
- ``cmcl server stop`` (:func:`stop_server`) ends the recorded server, background or by hand.

Concurrent verbs racing to start one take ``$PREFECT_HOME/cmcl-server.lock`` (``flock``): the
first starts the server and holds the lock until it answers; the others then find it running. A
server started but not answering yet is named in ``cmcl-server.starting``, so that a verb coming
after an interrupted starter waits for it instead of starting a second one. The server is started
through a launcher that exits at once: it is no descendant of the verb, whose Ctrl-C handling stops
every descendant (:mod:`flows.signals`).

This module imports nothing of Prefect.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from flows import api

__all__ = ["IDLE_ENV", "DEFAULT_IDLE_S", "idle_timeout", "clients_dir", "register_client", "idle_seconds",
           "wait_or_idle", "autostart", "stop_server", "STARTING_FILE", "ServerStartError", "may_need_server",
           "EarlyStart", "connect"]

#: Environment variable: seconds without a cmcl verb after which a background server stops itself.
IDLE_ENV = "CMCL_SERVER_IDLE"
DEFAULT_IDLE_S = 1800.0


class ServerStartError(RuntimeError):
    """The background server could not be started (the message names its log file)."""


def idle_timeout() -> float:
    """``CMCL_SERVER_IDLE`` in seconds (default 1800).

    Raises
    ------
    ValueError
        If the variable is set but not a positive number.
    """
    raw = os.environ.get(IDLE_ENV, "").strip()
    if not raw:
        return DEFAULT_IDLE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{IDLE_ENV}={raw!r} is not a positive number of seconds")
    return value


def clients_dir(home: Path | None = None) -> Path:
    """``$PREFECT_HOME/cmcl-server.clients``: one empty file per live verb using the server."""
    return (home or api.state_path().parent) / "cmcl-server.clients"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # someone else's process: it exists
        return True


def register_client(*, pid: int | None = None, home: Path | None = None) -> Path:
    """Mark process ``pid`` (default this one) as using the server until it exits."""
    pid = os.getpid() if pid is None else pid
    d = clients_dir(home)
    d.mkdir(parents=True, exist_ok=True)
    f = d / str(pid)
    f.touch()
    if pid == os.getpid():
        atexit.register(_unregister, f)
    return f


def _unregister(f: Path) -> None:
    try:
        f.unlink()
    except OSError:
        pass


def idle_seconds(*, since: float, home: Path | None = None, now: float | None = None) -> float:
    """Seconds since the last registered verb ended (0 while one is alive; ``since`` if none ever ran).

    Files of processes that are gone are removed (the removal counts as that verb's end).
    """
    now = time.time() if now is None else now
    d = clients_dir(home)
    last = since
    if d.is_dir():
        for f in d.iterdir():
            try:
                pid = int(f.name)
            except ValueError:
                continue
            if _alive(pid):
                return 0.0
            _unregister(f)
        try:
            last = max(last, d.stat().st_mtime)  # a file added or removed: a verb started or ended
        except OSError:
            pass
    return max(0.0, now - last)


def wait_or_idle(process: subprocess.Popen, *, idle_s: float | None, poll_s: float = 5.0,
                 home: Path | None = None) -> str:
    """Wait until ``process`` (the Prefect server) exits, or until no verb has used it for ``idle_s``.

    Returns ``"exited"`` or ``"idle"``; ``idle_s`` None waits for the process only.
    """
    since = time.time()
    poll_s = min(poll_s, idle_s / 4) if idle_s else poll_s
    while True:
        try:
            process.wait(timeout=poll_s)
            return "exited"
        except subprocess.TimeoutExpired:
            pass
        if idle_s is not None and idle_seconds(since=since, home=home) >= idle_s:
            return "idle"


def _log_path(home: Path) -> Path:
    return home / "cmcl-server.log"


def autostart(*, timeout: float = 120.0, idle_s: float | None = None,
              on_spawn: Callable[[int], None] | None = None) -> tuple[str, bool]:
    """The URL of a healthy ``cmcl server`` for this ``PREFECT_HOME``, starting one in the background
    if none runs; returns ``(url, started_here)``.

    Raises
    ------
    ServerStartError
        If the server exits or does not answer within ``timeout`` seconds (names its log).
    """
    home = api.state_path().parent
    home.mkdir(parents=True, exist_ok=True)
    idle_s = idle_timeout() if idle_s is None else idle_s
    with open(home / "cmcl-server.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent verbs: one starts it, the others wait and reuse it
        url = api.running_server(timeout=10.0)  # patient: a busy machine's server may answer slowly
        if url is not None:
            return url, False
        log, starting = _log_path(home), home / STARTING_FILE
        pid = _starting_pid(starting)  # one a verb began and did not see through (interrupted)
        if pid is None:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
            src = str(Path(__file__).resolve().parents[1])  # this very cmcl, installed or not
            env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
            pid = _spawn_detached([sys.executable, "-m", "flows.cli", "server", "--port", "0", "--idle-timeout",
                                   f"{idle_s:g}"], env=env, log=log, cwd=home)
            starting.write_text(str(pid))
            if on_spawn is not None:
                on_spawn(pid)
        try:
            return _wait_healthy(pid, timeout=timeout, log=log), True
        finally:
            starting.unlink(missing_ok=True)


#: ``$PREFECT_HOME/cmcl-server.starting``: the pid of a background server started but not yet answering.
STARTING_FILE = "cmcl-server.starting"


def _starting_pid(path: Path) -> int | None:
    """The pid in ``path`` if that process is a live server, else None."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and _is_server_process(pid) else None


def _wait_healthy(pid: int, *, timeout: float, log: Path) -> str:
    """The URL once the server ``pid`` started has recorded itself and answers; stops it on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        url = api.running_server()
        if url is not None:
            return url
        if not _alive(pid):
            raise ServerStartError(f"the background `cmcl server` exited before it answered; see {log}")
        if time.monotonic() > deadline:
            _stop_pid(pid, timeout=10.0)
            raise ServerStartError(f"the background `cmcl server` did not answer within {timeout:g} s; see {log}")
        time.sleep(0.2)


#: Starts argv[1:] in a session of its own with stdin from /dev/null and output to argv[1]'s log,
#: prints its pid and exits: the server is then no descendant of the verb (whose Ctrl-C handling
#: stops every descendant: flows.signals) and is reaped by init.
_LAUNCHER = (
    "import subprocess, sys\n"
    "with open(sys.argv[1], 'ab') as out:\n"
    "    p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,"
    " start_new_session=True)\n"
    "print(p.pid)\n"
)


def _spawn_detached(cmd: list[str], *, env: dict[str, str], log: Path, cwd: Path) -> int:
    """Start ``cmd`` detached (not a descendant of this process, own session); returns its pid."""
    out = subprocess.run([sys.executable, "-I", "-S", "-c", _LAUNCHER, str(log), *cmd], env=env, cwd=cwd,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
    try:
        return int(out.stdout.strip())
    except ValueError:
        raise ServerStartError(f"could not start the background `cmcl server`: {out.stderr.strip()[-300:]}") from None


def _stop_pid(pid: int, *, timeout: float) -> bool:
    """SIGTERM ``pid`` (and its process group when it leads one), SIGKILL after ``timeout``; True once gone."""
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:  # our own child (a server this process started): reap it
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return True
            except ChildProcessError:
                pass
            if not _alive(pid):
                return True
            time.sleep(0.1)
    return not _alive(pid)


def _is_server_process(pid: int) -> bool:
    """Whether ``pid`` still runs a server (a recorded pid may have been reused by another program)."""
    import psutil

    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    if "server" not in argv:
        return False
    before = argv[:argv.index("server")]  # `cmcl [-q] server`, `python -m flows.cli server`, `prefect server start`
    return any(Path(a).name in ("cmcl", "prefect") or a == "flows.cli" for a in before)


def stop_server(*, timeout: float = 20.0) -> dict | None:
    """Stop the ``cmcl server`` recorded for this ``PREFECT_HOME`` (or the background one still starting,
    whose ``api_url`` is then None); returns its record, or None if none runs.

    The recording ``cmcl server`` process gets SIGTERM (it stops its Prefect server and removes the
    record); if it is gone, the Prefect server's process group is stopped directly.

    Raises
    ------
    RuntimeError
        If a process survives SIGKILL.
    """
    path = api.state_path()
    try:
        state = json.loads(path.read_text())
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        starting = path.parent / STARTING_FILE
        pid = _starting_pid(starting)  # started in the background, not answering yet
        if pid is None:
            return None
        if not _stop_pid(pid, timeout=timeout):
            raise RuntimeError(f"process {pid} of the `cmcl server` survived SIGKILL") from None
        starting.unlink(missing_ok=True)
        return {"api_url": None, "pid": pid}
    owner = int(state.get("owner") or 0)
    alive = [p for p in (owner, pid) if p and _alive(p) and _is_server_process(p)]
    for p in alive:
        if not _stop_pid(p, timeout=timeout):
            raise RuntimeError(f"process {p} of the `cmcl server` survived SIGKILL")
    api.forget_server(pid, path=path)
    return state if alive else None


_API_SETTING = re.compile(r"api_url|^\s*\[api\]|^\s*api\.url", re.IGNORECASE | re.MULTILINE)


def may_need_server() -> bool:
    """A cheap guess, before Prefect is imported, that this process will want the background server:
    reuse is on and neither the environment nor a settings file Prefect reads (profiles,
    ``prefect.toml``, ``pyproject.toml``, ``.env``) mentions an API URL. :func:`connect` decides exactly."""
    if not api.reuse_enabled() or os.environ.get("PREFECT_API_URL"):
        return False
    for f in (api.state_path().parent / "profiles.toml", Path("prefect.toml"), Path("pyproject.toml"), Path(".env")):
        try:
            if _API_SETTING.search(f.read_text(errors="replace")):
                return False
        except OSError:
            continue
    return True


class EarlyStart:
    """:func:`autostart` in a thread, begun as soon as the CLI knows its verb runs a flow, so the
    server starts while the verb imports Prefect and checks its inputs; :meth:`result` joins it."""

    def __init__(self) -> None:
        import threading

        self._out: tuple[str, bool] | BaseException | None = None
        #: whether this process started a server (even one not answering yet)
        self.spawned = False
        self._thread = threading.Thread(target=self._run, name="cmcl-server-start", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._out = autostart(on_spawn=lambda pid: setattr(self, "spawned", True))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._out = exc

    def result(self) -> tuple[str, bool]:
        self._thread.join()
        if isinstance(self._out, BaseException):
            raise self._out
        return self._out


def connect(*, early: EarlyStart | None = None) -> tuple[str | None, bool]:
    """Point this process at a ``cmcl server`` unless the user configured a Prefect API or turned reuse
    off: the recorded one, else one started in the background. Returns ``(url, started_here)``;
    ``(None, False)`` leaves Prefect's own choice (the user's API, or its ephemeral mode).

    Raises
    ------
    ServerStartError
        If no server runs and the background one could not be started.
    """
    if not api.reuse_enabled() or api.api_configured():
        return None, False
    url, started = early.result() if early is not None else autostart()
    if not api.point_at(url):
        return None, False
    register_client()
    return url, started
