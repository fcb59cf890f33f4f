"""The ``cmcl`` command's entry point: hand the command to a warm helper when one runs, else run it here.

A ``cmcl`` process spends its first seconds importing (typer, pandas, Prefect, the pipeline: ~2.5 s of
CPU on the project's 2-core machine) and starting its worker pool's fork server (another ~1.5 s on the
other core), before any work. The warm helper (:mod:`flows.warm`) is a background process that has
done all of that once: this entry point sends it the command (arguments, working folder, environment,
and its own stdin/stdout/stderr, passed as file descriptors over a Unix socket); the helper forks a
child that runs the command exactly as this process would have, writing to this terminal, while this
process waits, forwards Ctrl-C and other signals to it (Ctrl-Z stops both; ``fg``/``bg`` resumes
both), and exits with its exit status.

When no helper matches, the command runs in this process as before, and a verb that runs Prefect
flows starts one in the background for the next commands (one line says so; it stops after
``CMCL_SERVER_IDLE`` seconds without a command, 1800 by default; ``cmcl server stop`` ends it).
A helper serves only commands whose code and environment it was started with (:func:`helper_key`:
the same Python, ``sys.path``, cmcl source files, installed packages and import-time environment
variables); any other command runs here and starts a helper of its own.

``CMCL_WARM=0`` turns helpers off (the test suite does; its tests of helpers turn them on).
Platforms without ``fork`` or descriptor passing run every command here.

This module imports only the standard library: it runs before anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

__all__ = ["main", "WARM_ENV", "FLOW_VERBS", "helper_key", "code_stamp", "runtime_dir", "warm_enabled",
           "verb_of", "send_request", "HEADER", "pid_running"]

#: Environment variable: ``0`` (or false/no/off) runs every command in its own process, no helper.
WARM_ENV = "CMCL_WARM"
#: Verbs that run Prefect flows: after running one here, ``cmcl`` starts a helper for the next.
FLOW_VERBS = frozenset({"ingest", "compounds", "profile", "train", "evaluate", "run", "demo", "finetune", "serve"})
#: Verbs that always run in their own process: long-lived services with their own signal handling.
_OWN_PROCESS = frozenset({"server", "serve"})
#: Options of the ``cmcl`` group itself (they come before the verb).
_GROUP_OPTIONS = frozenset({"-q", "--quiet", "--debug"})
#: Environment variables read at import time by the modules a helper preloads: a command whose values
#: differ needs a helper of its own. Other variables (PATH, TERM, COLUMNS, CMCL_STORE...) are the
#: command's own and are applied in the helper's child.
_KEY_PREFIXES = ("PREFECT_", "PYTHON", "NUMBA_", "OMP_", "OPENBLAS_", "MKL_", "DASK_", "LC_", "LD_", "TORCH", "CMCL_")
_KEY_NAMES = frozenset({"LANG", "HOME", "DO_NOT_TRACK", "TZ", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"})
_NOT_KEY = frozenset({"CMCL_STORE", "CMCL_PROGRESS"})
#: The cmcl packages whose source files key a helper (a helper never runs code older than its command's).
_PACKAGES = ("flows", "pipeline", "cmcl_model", "schemas")
#: A request starts with this header: payload length, with the three descriptors attached.
HEADER = struct.Struct("!Q")


def warm_enabled(env: dict[str, str] | None = None) -> bool:
    """Whether helpers may serve commands here: on unless ``CMCL_WARM`` says 0, and only where the
    platform has ``fork`` and descriptor passing over Unix sockets."""
    env = os.environ if env is None else env
    if env.get(WARM_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return hasattr(os, "fork") and hasattr(socket, "send_fds") and hasattr(socket, "AF_UNIX")


def verb_of(argv: list[str]) -> str | None:
    """The verb of ``cmcl ARGV`` (the first argument after the group's own options), or None."""
    for a in argv:
        if a in _GROUP_OPTIONS:
            continue
        return None if a.startswith("-") else a
    return None


def code_stamp(root: Path | None = None) -> str:
    """A digest of what the helper's preloaded code is made of: every cmcl source file's path, size
    and modification time, and the modification times of the ``site-packages`` folders on ``sys.path``
    (installing or removing a package changes them; other folders there, such as a working folder
    named by ``PYTHONPATH=.``, change with every file written in them). A few milliseconds."""
    root = Path(__file__).resolve().parents[1] if root is None else root
    h = hashlib.sha256()
    stack = [str(root / p) for p in _PACKAGES]
    while stack:
        d = stack.pop()
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if e.name != "__pycache__" and not e.name.startswith("."):
                    stack.append(e.path)
            elif e.name.endswith((".py", ".json")):
                st = e.stat()
                h.update(f"{e.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for p in sys.path:
        if p.rstrip(os.sep).endswith(("site-packages", "dist-packages")):  # not a working folder: it changes
            try:
                h.update(f"{p}\0{os.stat(p).st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{p}\0-\n".encode())
    return h.hexdigest()


def helper_key(env: dict[str, str] | None = None, *, stamp: str | None = None) -> str:
    """The name of the helper that may serve this process's commands: a digest of the Python
    executable and version, ``sys.path``, :func:`code_stamp`, the import-time environment and the
    limits a command inherits (:func:`_process_context`)."""
    env = os.environ if env is None else env
    h = hashlib.sha256()
    h.update(f"{sys.executable}\0{sys.version}\0{os.getuid()}\n".encode())
    h.update(json.dumps(sys.path).encode())
    h.update((code_stamp() if stamp is None else stamp).encode())
    h.update(_process_context().encode())
    for k in sorted(env):
        if (k.startswith(_KEY_PREFIXES) or k in _KEY_NAMES) and k not in _NOT_KEY and k != WARM_ENV:
            h.update(f"{k}={env[k]}\n".encode())
    return h.hexdigest()[:24]


def _process_context() -> str:
    """What a process inherits and a helper's child would take from the helper instead: its control
    groups (a batch job's allocation: a command of another SLURM job or systemd scope gets its own
    helper, started inside that allocation), resource limits, CPU affinity and niceness."""
    import resource

    parts = []
    try:
        with open("/proc/self/cgroup") as f:
            parts.append(f.read())
    except OSError:
        pass
    for name in ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_NOFILE", "RLIMIT_CPU", "RLIMIT_NPROC", "RLIMIT_RSS"):
        if hasattr(resource, name):
            parts.append(f"{name}={resource.getrlimit(getattr(resource, name))}")
    if hasattr(os, "sched_getaffinity"):
        parts.append(f"cpus={sorted(os.sched_getaffinity(0))}")
    parts.append(f"nice={os.getpriority(os.PRIO_PROCESS, 0)}")
    return "\n".join(parts)


def runtime_dir() -> Path | None:
    """This user's folder for helper sockets (``$XDG_RUNTIME_DIR/cmcl``, else ``/tmp/cmcl-UID``;
    short, so socket paths fit), created private; None if it cannot be made private."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    d = Path(base) / "cmcl" if base and os.path.isdir(base) else Path("/tmp") / f"cmcl-{os.getuid()}"
    try:
        d.mkdir(mode=0o700, exist_ok=True)
        st = d.lstat()
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or not os.path.isdir(d) or os.path.islink(d):
        return None
    return d


def send_request(sock: socket.socket, request: dict, fds: list[int]) -> None:
    """Send ``request`` (JSON) with ``fds`` attached to the header."""
    payload = json.dumps(request).encode()
    socket.send_fds(sock, [HEADER.pack(len(payload))], fds)
    sock.sendall(payload)


def _read_line(sock: socket.socket, buf: bytearray) -> dict | None:
    """The next JSON line from ``sock`` (None at end of stream)."""
    while b"\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return json.loads(line)


def _run_warm(argv: list[str], path: Path) -> int | None:
    """Run ``cmcl ARGV`` in the helper listening at ``path``; its exit status, or None when no helper
    answers there (nothing was run)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    try:
        cwd = os.getcwd()
    except OSError:  # the working folder was removed: the command runs here and says what it can
        sock.close()
        return None
    request = {"argv": [sys.argv[0], *argv], "cwd": cwd, "env": dict(os.environ), "umask": _umask(),
               "client": os.getpid()}
    buf = bytearray()
    child: list[int] = []  # the child's pid once the helper has forked it
    pending: list[int] = []  # signals that came before: delivered once it is known

    def forward(signum, frame):  # the terminal's Ctrl-C reaches this process only
        if not child:
            pending.append(signum)
            return
        try:
            os.kill(child[0], signum)
        except OSError:
            pass

    def suspend(signum, frame):  # Ctrl-Z: stop the child, then this process, as the shell expects
        if not child:
            pending.append(signum)
            return
        forward(signal.SIGSTOP, frame)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # returns once `fg`/`bg` sent SIGCONT
        signal.signal(signal.SIGTSTP, suspend)
        forward(signal.SIGCONT, frame)

    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
    saved = {s: signal.signal(s, forward) for s in forwarded}  # before the request: no signal falls in between
    saved[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, suspend)
    try:
        send_request(sock, request, [0, 1, 2])
        started = _read_line(sock, buf)
    except (OSError, ValueError):
        started = None
    if not started or "pid" not in started:
        sock.close()
        for s, h in saved.items():
            signal.signal(s, h)
        stop = [s for s in pending if s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
        if stop:  # interrupted before anything started
            sys.stderr.write("error: interrupted before the command started\n")
            return 128 + stop[0]
        return None  # refused or gone before starting anything: run here
    child.append(int(started["pid"]))
    for s in pending:
        (suspend if s == signal.SIGTSTP else forward)(s, None)
    try:
        done = _read_line(sock, buf)
    except (OSError, ValueError):
        done = None
    finally:
        sock.close()
    if not done:  # the helper was killed: the child runs on, orphaned; wait for it, still forwarding signals
        while pid_running(child[0]):
            time.sleep(0.1)
        sys.stderr.write("error: the warm cmcl helper was killed while it ran this command, whose exit status "
                         "is lost; check its output (CMCL_WARM=0 runs commands without a helper)\n")
        return 1
    if "signal" in done:
        return 128 + int(done["signal"])
    return int(done.get("exit", 1))


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not reaped, does not)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except ProcessLookupError:
        return False
    except OSError:
        return True


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The helper's command line: this process's ``sys.path``, then :func:`flows.warm.serve`.
_HELPER_MAIN = "import json, sys; sys.path[:] = json.loads(sys.argv[2]); from flows.warm import serve; serve()"


def _spawn_helper(key: str, d: Path) -> bool:
    """Start the helper named ``key`` in the background, detached, unless one is starting; True if
    this process started it. It waits for this process to end before it imports anything."""
    import subprocess

    record = d / f"{key}.json"
    try:
        pid = int(json.loads(record.read_text())["pid"])
        os.kill(pid, 0)
        return False  # starting (or running and not answering: it is busy importing)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    log = d / f"{key}.log"
    cmd = [sys.executable, "-c", _HELPER_MAIN, key, json.dumps(sys.path), str(os.getpid())]
    try:
        with open(log, "ab") as out:
            subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, close_fds=True)
    except OSError:
        return False
    return True


def main() -> None:
    """``cmcl``: run the command in a matching warm helper, else here (starting a helper for later)."""
    argv = sys.argv[1:]
    verb = verb_of(argv)
    key = d = None
    if verb is not None and verb not in _OWN_PROCESS and warm_enabled():
        d = runtime_dir()
        if d is not None:
            key = helper_key()
            code = _run_warm(argv, d / f"{key}.sock")
            if code is not None:
                sys.stdout.flush()
                os._exit(code)
    if key is not None and verb in FLOW_VERBS and "--help" not in argv and _spawn_helper(key, d):
        from flows.background import idle_timeout

        try:
            idle = f"{idle_timeout() / 60:g} min"
        except ValueError:
            idle = "an idle period"
        sys.stderr.write(f"cmcl: starting a warm helper in the background for later commands (it stops after "
                         f"{idle} without one; `cmcl server stop` ends it now; CMCL_WARM=0 turns it off)\n")
    from flows.cli import app

    app()


if __name__ == "__main__":  # pragma: no cover
    main()
