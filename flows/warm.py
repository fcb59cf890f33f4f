"""The warm ``cmcl`` helper: a background process that has imported cmcl once and forks a child per command.

:mod:`flows.launch` (the ``cmcl`` entry point) starts it after a command that ran Prefect flows, and
sends it later commands. The helper:

1. waits until the command that started it has ended (it does not compete with it for the CPU), then
   imports the CLI, pandas, Prefect (with the modules a flow run loads) and the pipeline stages, and
   starts the worker pools' fork server (:func:`pipeline.ingest.pool.start_pool_server`), which
   preloads the ingestion and compound workers and loads the compiled kernels, features included;
2. listens on ``<runtime dir>/<key>.sock`` (:func:`flows.launch.runtime_dir`, private to the user),
   accepting only the user's own processes;
3. for each command, forks a child that takes the command's stdin/stdout/stderr (passed as
   descriptors), working folder, umask, environment and arguments, refreshes Prefect's settings and
   logging and the CLI's consoles from them (:func:`reconfigure`, called by the CLI once it has read
   ``-q``/``--debug``), and runs the CLI; its worker pools are forked from the helper's fork server,
   so they start at once. The helper reports the child's pid, then its exit status, to the command,
   and sends SIGTERM to the child if the command goes away (killed, or its terminal closed);
4. stops when no command came for ``CMCL_SERVER_IDLE`` seconds (default 1800), when its cmcl source
   changed, or on SIGTERM (``cmcl server stop``: :func:`stop_helpers`). Children running then finish.

The helper is single-threaded until it forks (checked: a thread at fork time could hold a lock the
child needs); Prefect, zarr and the CLI start their threads in the child.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path

from flows import api
from flows.launch import HEADER, code_stamp, pid_running, runtime_dir

__all__ = ["serve", "in_child", "reconfigure", "stop_helpers", "helpers", "PRELOAD"]

#: What the helper imports before serving: the CLI and every verb module, the flows they call (not
#: torch: training verbs load it in the child, where its thread pools may start), and Prefect's
#: engine modules that a flow run imports on first use.
PRELOAD: tuple[str, ...] = (
    "flows.cli", "flows.api", "flows.background", "flows.signals", "flows.progress", "flows.parallel",
    "flows.ingest", "flows.compounds", "flows.profiles", "flows.inspect", "flows.pipeline",
    "pandas", "pyarrow.parquet", "psutil", "prefect", "prefect.flows", "prefect.tasks", "prefect.flow_engine",
    "prefect.task_engine", "prefect.client.orchestration", "prefect.events.worker", "prefect.logging.handlers",
    "prefect.futures", "prefect.task_runners", "prefect.results", "prefect.context", "prefect.settings",
    "pipeline.ingest.run", "pipeline.ingest.plan", "pipeline.ingest.batches", "pipeline.store",
)
#: What the helper's fork server preloads: the ingestion workers with every compiled kernel (features
#: included: loading them costs the command nothing here) and the compound workers.
_POOL_PRELOAD = ("pipeline.ingest.warm", "pipeline.ingest.warm_features", "pipeline.chem.standardize",
                 "pipeline.chem.graphs")
#: How often the helper checks whether its cmcl source changed (it then stops: it would serve old code).
_STALE_CHECK_S = 10.0

_child = False


def in_child() -> bool:
    """Whether this process is a helper's child running a command."""
    return _child


def _log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {msg}", flush=True)


def serve() -> None:
    """The helper's main (``sys.argv``: key, ``sys.path`` as JSON, pid of the command to wait for)."""
    key, after = sys.argv[1], int(sys.argv[3])
    d = runtime_dir()
    if d is None:
        return
    import fcntl

    lock = open(d / f"{key}.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held for life: one helper per key
    except OSError:
        return
    record = d / f"{key}.json"
    stamp = code_stamp()
    _write_record(record, key, "starting")
    crashed = False
    try:
        _serve(key, d, record, stamp, after)
    except Exception:
        crashed = True
        raise
    finally:
        log = () if crashed else (d / f"{key}.log",)  # a crashed helper's log (its traceback) is kept
        for p in (d / f"{key}.sock", record, *log, d / f"{key}.lock"):
            try:
                if p != record or json.loads(p.read_text()).get("pid") == os.getpid():
                    p.unlink()
            except (OSError, ValueError):
                pass


def _prefect_home() -> str:
    return str(api.state_path().parent.resolve())


def _write_record(record: Path, key: str, state: str) -> None:
    """``<key>.json``: this helper's pid, key, state ('starting', 'ready') and Prefect home."""
    record.write_text(json.dumps({"pid": os.getpid(), "key": key, "state": state, "prefect_home": _prefect_home(),
                                  "started": time.time()}))


def _serve(key: str, d: Path, record: Path, stamp: str, after: int) -> None:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    while pid_running(after):  # the command that started the helper runs: leave it the CPU
        time.sleep(0.1)
    started = time.monotonic()
    for name in PRELOAD:
        __import__(name)
    from pipeline.ingest.pool import start_pool_server

    start_pool_server(_POOL_PRELOAD)
    _pool_server_ready()
    import gc
    import threading

    gc.collect()
    gc.freeze()  # children's collections skip what the helper built: no traversal, no copy-on-write of its pages

    if threading.active_count() != 1:
        _log(f"not serving: threads after the imports ({[t.name for t in threading.enumerate()]})")
        return
    os.chdir("/")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = d / f"{key}.sock.{os.getpid()}"
    listener.bind(str(tmp))
    listener.listen(16)
    os.replace(tmp, d / f"{key}.sock")  # commands find it only once it is ready
    _write_record(record, key, "ready")
    _log(f"ready in {time.monotonic() - started:.1f} s")
    _loop(listener, stamp, d / f"{key}.sock")


def _noop() -> None:
    """What :func:`_pool_server_ready` runs in a worker."""


def _pool_server_ready() -> None:
    """Wait until the fork server has preloaded its modules (it forks a first worker only then), so
    that the helper is ready only once a command's pool would start at once: a command arriving
    earlier would wait for the preload anyway, and compete with it for the CPU."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        p = multiprocessing.get_context("forkserver").Process(target=_noop)
        p.start()
        p.join()


#: Set by SIGTERM/SIGHUP once serving: stop listening, let the running commands finish, then exit.
_stopping = False
_serving = False


def _stop(signum, frame) -> None:
    global _stopping
    if not _serving:
        raise SystemExit(0)
    _stopping = True  # the loop's select wakes up (signal wakeup fd)


def _loop(listener: socket.socket, stamp: str, path: Path) -> None:
    """Accept commands, fork their children, report their ends; return when idle or stale, or once
    told to stop (SIGTERM) and the commands running then have ended."""
    global _serving
    from flows.background import idle_timeout

    idle_s = idle_timeout()
    _serving = True
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *a: None)
    signal.set_wakeup_fd(wake_w)
    children: dict[int, socket.socket] = {}
    last = checked = time.monotonic()
    while True:
        if _stopping and listener is not None:
            listener.close()
            listener = None
            path.unlink(missing_ok=True)  # no new command comes here
            _log(f"stopping once {len(children)} running command(s) end")
        if _stopping and not children:
            return
        socks = [*(() if listener is None else (listener,)), *children.values()]
        ready, _, _ = select.select([*socks, wake_r], [], [], _STALE_CHECK_S)
        now = time.monotonic()
        if wake_r in ready:
            os.read(wake_r, 512)
        _reap(children)
        for s in ready:
            if listener is not None and s is listener:
                _accept(listener, children, (wake_r, wake_w))
            elif s in children.values():
                _command_gone(s, children)
        if children or _stopping:
            last = now
        elif now - last > idle_s:
            _log(f"no cmcl command for {idle_s:g} s: stopping")
            return
        if now - checked > _STALE_CHECK_S:
            checked = now
            if code_stamp() != stamp:
                _log("cmcl's source or packages changed: stopping")
                return


def _reap(children: dict[int, socket.socket]) -> None:
    """Send each ended child's status to its command."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue  # the fork server or the resource tracker
        end = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.waitstatus_to_exitcode(status)}
        try:
            conn.sendall(json.dumps(end).encode() + b"\n")
        except OSError:
            pass
        conn.close()


def _command_gone(conn: socket.socket, children: dict[int, socket.socket]) -> None:
    """The command's end of the connection closed (it was killed): stop its child."""
    try:
        if conn.recv(1, socket.MSG_PEEK):
            return
    except OSError:
        pass
    for pid, c in list(children.items()):
        if c is conn:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
            children.pop(pid)
            conn.close()


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
    if len(data) != HEADER.size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError("bad request header")
    (n,) = HEADER.unpack(data)
    payload = bytearray()
    while len(payload) < n:
        chunk = conn.recv(min(1 << 20, n - len(payload)))
        if not chunk:
            break
        payload += chunk
    return json.loads(payload), fds


def _accept(listener: socket.socket, children: dict[int, socket.socket], wake: tuple[int, int]) -> None:
    conn, _ = listener.accept()
    conn.settimeout(10.0)
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        uid = int.from_bytes(creds[4:8], sys.byteorder)
        if uid != os.getuid():
            raise PermissionError(f"uid {uid}")
        request, fds = _recv_request(conn)
    except (OSError, ValueError) as exc:
        _log(f"refused a request: {exc}")
        conn.close()
        return
    pid = os.fork()
    if pid == 0:  # the command's child: never returns
        _run_command(request, fds, conn, [listener.fileno(), *wake, *(c.fileno() for c in children.values())])
    for fd in fds:
        os.close(fd)
    children[pid] = conn
    try:
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    except OSError:
        pass
    _log(f"{pid}: cmcl {' '.join(request['argv'][1:])}")


def _run_command(request: dict, fds: list[int], conn: socket.socket, close: list[int]) -> None:
    """In the forked child: become the command's process and run the CLI; exits, never returns."""
    global _child
    code = 1
    try:
        _child = True
        signal.set_wakeup_fd(-1)
        for s, h in ((signal.SIGCHLD, signal.SIG_DFL), (signal.SIGTERM, signal.SIG_DFL),
                     (signal.SIGHUP, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            signal.signal(s, h)
        conn.close()
        for fd in close:
            try:
                os.close(fd)
            except OSError:
                pass
        os.setpgid(0, 0)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.umask(int(request["umask"]))
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        _name_process(sys.argv[1:])
        _adopt_pool_server()
        _rebuild_stdio()
        from flows.cli import app

        app()  # exits through SystemExit, or os._exit after a flow (flows.cli.app.exit_without_teardown)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child must never return into the helper's loop
        import traceback

        traceback.print_exc()
    finally:
        from flows.cli.app import exit_without_teardown

        exit_without_teardown(code)  # exit handlers, flushed output, no teardown


def _name_process(argv: list[str]) -> None:
    """Name this child ``cmcl VERB`` for ``top``, ``pgrep`` and ``ps -o comm`` (its full command line
    stays the helper's: only the kernel's 15-character name can be changed without privileges)."""
    from flows.launch import verb_of

    try:
        with open("/proc/self/comm", "w") as f:
            f.write(f"cmcl {verb_of(argv) or ''}".strip()[:15])
    except OSError:
        pass


def _rebuild_stdio() -> None:
    """New ``sys.stdin/stdout/stderr`` over descriptors 0-2 (now the command's), buffered as Python
    buffers them at start: stdout by line on a terminal, stderr always by line."""
    import io

    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        old = getattr(sys, name)
        raw = io.open(fd, "rb" if fd == 0 else "wb", closefd=False)
        stream = io.TextIOWrapper(raw, encoding=old.encoding, errors=old.errors,
                                  line_buffering=fd == 2 or (fd == 1 and os.isatty(fd)))
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _adopt_pool_server() -> None:
    """Let the child's worker pools use the helper's fork server (multiprocessing would check it with
    ``waitpid``, which only its parent, the helper, may call; it then starts a new one)."""
    from multiprocessing import forkserver, resource_tracker

    server = forkserver._forkserver
    pid = server._forkserver_pid
    if pid is None:
        return
    original = server.ensure_running

    def ensure_running() -> None:
        if pid_running(pid):
            resource_tracker.ensure_running()
            return
        server._forkserver_pid = None  # gone: start this process's own
        server.ensure_running = forkserver.ensure_running = original
        original()

    server.ensure_running = forkserver.ensure_running = ensure_running  # the module's alias too


def reconfigure() -> None:
    """In a helper's child, once the CLI has set its environment from ``-q``/``--debug``: rebuild what
    was built from the helper's environment at import (Prefect's settings and logging, the CLI's
    consoles, which detect the terminal)."""
    from prefect.logging.configuration import setup_logging

    import importlib

    from flows.api import refresh_prefect_settings

    cli_app = importlib.import_module("flows.cli.app")
    refresh_prefect_settings()
    setup_logging(incremental=False)
    cli_app.console.__init__()
    cli_app.err.__init__(stderr=True)


def helpers(prefect_home: str | None = None) -> list[dict]:
    """The records of the helpers running for ``prefect_home`` (default: this process's)."""
    d = runtime_dir()
    home = _prefect_home() if prefect_home is None else prefect_home
    out = []
    for f in sorted(d.glob("*.json")) if d is not None else ():
        try:
            rec = json.loads(f.read_text())
            pid = int(rec["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if rec.get("prefect_home") == home and pid_running(pid) and _is_helper(pid):
            out.append(rec)
    return out


def _is_helper(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"flows.warm" in f.read()
    except OSError:
        return True


def stop_helpers(*, timeout: float = 10.0) -> int:
    """Stop the helpers of this process's ``PREFECT_HOME``; how many. Each stops listening at once and
    exits once the commands it is running have ended (waited for up to ``timeout`` seconds here)."""
    recs = helpers()
    for rec in recs:
        try:
            os.kill(int(rec["pid"]), signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    for rec in recs:
        while pid_running(int(rec["pid"])) and time.monotonic() < deadline:
            time.sleep(0.05)
    return len(recs)
