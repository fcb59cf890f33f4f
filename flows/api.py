"""Which Prefect API a ``cmcl`` verb talks to: a running ``cmcl server`` when there is one.

With no API configured, every Prefect flow run of a fresh process starts Prefect's temporary
API server in a subprocess and waits for it (measured on the project's busy 2-core machine:
10-18 s, most of it that subprocess importing Prefect's server modules, plus ~3 s for the
caller to import them too); a process that talks to a running server skips all of it.

When none runs, a verb starts one in the background (:mod:`flows.background`: it stops itself
after an idle period; ``cmcl server stop`` ends it).

``cmcl server`` records its API URL in ``$PREFECT_HOME/cmcl-server.json`` (:func:`record_server`)
and removes the record when it stops (:func:`forget_server`). Before a verb's first flow,
:func:`use_running_server` points the process, and the processes it starts, at that server when
all of these hold, and otherwise leaves Prefect alone (its ephemeral mode):

- no Prefect API is configured: ``PREFECT_API_URL`` from the environment, a Prefect profile,
  ``prefect.toml``/``pyproject.toml``/``.env`` (or a test harness) always wins;
- ``CMCL_REUSE_SERVER`` is not ``0``;
- the recorded URL is a loopback address, its process is alive, ``/health`` answers within a
  few seconds and the server runs the same major Prefect version, not older than this client's.

Each flow run also waits up to a second at its end for Prefect's heartbeat thread to notice it
should stop (it sleeps in one-second steps; a flow with three subflows took 4.1 s instead of 0.7 s).
Heartbeats (on by default in recent Prefect 3 releases, PrefectHQ/prefect#21058: every 180 s in the
installed 3.9.1) only feed zombie-run automations a user may have set up on a server; :func:`no_flow_heartbeats` turns them off around the CLI's flows unless the
user set ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` (flows served by ``cmcl serve`` keep Prefect's default).

This module imports nothing of Prefect at import time.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["STATE_FILE", "REUSE_ENV", "state_path", "client_url", "record_server", "forget_server",
           "running_server", "reuse_enabled", "api_configured", "use_running_server", "point_at", "refresh_prefect_settings",
           "no_flow_heartbeats"]

#: Name of the record ``cmcl server`` keeps in ``$PREFECT_HOME`` while it runs.
STATE_FILE = "cmcl-server.json"
#: Environment variable: ``0`` keeps every verb in Prefect's ephemeral mode even when a
#: ``cmcl server`` is up.
REUSE_ENV = "CMCL_REUSE_SERVER"


def state_path() -> Path:
    """``$PREFECT_HOME/cmcl-server.json`` (``PREFECT_HOME`` defaults to ``~/.prefect``, as in Prefect)."""
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser() / STATE_FILE


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_url(host: str, port: int) -> str | None:
    """The loopback API URL through which clients on this machine reach a server bound to ``host``.

    ``None`` when the server is not reachable on loopback (bound to one non-loopback address).
    """
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if not _is_loopback(host):
        return None
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/api"


def record_server(api_url: str, pid: int, *, owner: int | None = None, path: Path | None = None) -> Path:
    """Record a running server for other cmcl processes (atomic): its API URL, the pid serving it and
    ``owner``, the ``cmcl server`` process that started it (``cmcl server stop`` signals that one)."""
    from importlib.metadata import version

    path = path or state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"api_url": api_url, "pid": pid, "owner": owner, "prefect_version": version("prefect"),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1))
    os.replace(tmp, path)
    return path


def forget_server(pid: int, *, path: Path | None = None) -> None:
    """Remove the record if it still names ``pid`` (a later ``cmcl server`` may have replaced it)."""
    path = path or state_path()
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _get(url: str, timeout: float) -> str | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.read().decode() if r.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _compatible(server_version: str) -> bool:
    """Prefect's own rule: same major version; an older server only warns, so it is not used here."""
    from importlib.metadata import version as installed

    from packaging.version import InvalidVersion, Version

    try:
        server, client = Version(server_version), Version(installed("prefect"))
    except InvalidVersion:
        return False
    return server.major == client.major and server >= client


def running_server(*, timeout: float = 3.0, path: Path | None = None) -> str | None:
    """The API URL of the recorded ``cmcl server`` if it is healthy now, else None.

    A record whose process is gone is removed. Only loopback URLs are ever contacted, each request
    waits at most ``timeout`` seconds (a healthy server answers in milliseconds, but its first
    ``/admin/version`` after start took 1.1 s on the busy 2-core machine).
    """
    path = path or state_path()
    try:
        state = json.loads(path.read_text())
        url, pid = str(state["api_url"]).rstrip("/"), int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _is_loopback(urllib.parse.urlsplit(url).hostname):
        return None
    if not _alive(pid):
        forget_server(pid, path=path)  # stale: its server died without cleaning up
        return None
    if _get(f"{url}/health", timeout) is None:
        return None
    try:
        served = json.loads(_get(f"{url}/admin/version", timeout) or "null")
    except ValueError:
        return None
    return url if isinstance(served, str) and _compatible(served) else None


def reuse_enabled() -> bool:
    """False when ``CMCL_REUSE_SERVER`` is ``0`` (or false/no/off): Prefect's ephemeral mode."""
    return os.environ.get(REUSE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def api_configured() -> bool:
    """Whether the user (environment, profile, ``prefect.toml``, ``.env``, a harness) set a Prefect API."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def use_running_server() -> str | None:
    """Point this process and its children at the recorded ``cmcl server`` unless an API is configured.

    Call before the first flow runs. Returns the URL used, or None (nothing changed: the API the
    user configured, or Prefect's ephemeral mode).
    """
    if not reuse_enabled() or os.environ.get("PREFECT_API_URL") or not state_path().is_file():
        return None
    if api_configured():
        return None
    url = running_server()
    return url if url is not None and point_at(url) else None


def point_at(url: str) -> bool:
    """Make ``url`` this process's (and its children's) Prefect API; False, changing nothing, when a
    caller's own settings context overrides the environment."""
    os.environ["PREFECT_API_URL"] = url  # children (Dask workers, pools) inherit it
    refresh_prefect_settings()
    from prefect.settings import get_current_settings

    if str(get_current_settings().api.url or "").rstrip("/") != url:  # inside a caller's own settings context: leave it be
        del os.environ["PREFECT_API_URL"]
        refresh_prefect_settings()
        return False
    return True


def refresh_prefect_settings() -> None:
    """Prefect resolved its settings when imported: rebuild the process-wide settings context from
    the environment (threads such as Prefect's log and event workers read that one)."""
    import prefect.context

    refresh = getattr(prefect.context, "refresh_global_settings_context", None)
    if refresh is not None:
        refresh()
    else:  # Prefect 3 releases before it existed
        prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.root_settings_context()


@contextmanager
def no_flow_heartbeats() -> Iterator[None]:
    """Flow runs started in this context (same thread) emit no heartbeat events, and so do not wait
    up to a second each at their end for the heartbeat thread; a frequency the user set wins."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    flows_settings = get_current_settings().flows
    if flows_settings.heartbeat_frequency is None or "heartbeat_frequency" in flows_settings.model_fields_set:
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
