"""Process lifetime: no child outlives its parent, and a later run cleans what a killed one left.

Three tools, one per way a child is started:

  * `dies_with_parent(command)` (for the `subprocess.Popen` calls this project makes: the BigQuery
    emulator, the demo's service): the command is started through a tiny launcher that asks the
    kernel to SIGKILL it when its parent (the thread that started it) dies, by any signal, SIGKILL
    included (Linux `prctl(PR_SET_PDEATHSIG)`, kept across `exec`), then execs the command. No
    `preexec_fn`, which is unsafe in a process with threads.
  * `children_die_with_me()` (a context manager for commands whose children are started by a
    library, e.g. kfp.local's task subprocesses): a small watchdog process, in its own session,
    follows this process's descendants; if this process dies without saying goodbye (SIGKILL, or
    any fatal signal), the watchdog terminates every descendant it saw, and theirs. SIGTERM is
    turned into an orderly exit: descendants get SIGTERM first, then `SystemExit(143)` unwinds
    this process's `finally` blocks.
  * `owned_dir` / `remove_stale_dirs`: scratch directories (staging, workspaces) whose names say
    which process made them (pid, its start time and the boot), so a later run removes exactly
    those whose owner is gone, never a live run's.

Linux only where it matters (`/proc`, `prctl`); elsewhere the functions degrade to no-ops.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

LOG = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
GOODBYE = b"done\n"
TERM_GRACE_S = 3.0
_OWNER = re.compile(r"p(?P<pid>\d+)t(?P<start>\d+)b(?P<boot>[0-9a-f]{8})-")


# ---------------------------------------------------------------------------------------------
# Facts about processes (from /proc)
# ---------------------------------------------------------------------------------------------
def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8]
    except OSError:
        return "00000000"


def is_alive(pid: int, started: int | None = None) -> bool:
    """True when `pid` runs (and, given `started`, is the same process: pids are reused)."""
    if started is not None and Path("/proc").is_dir():
        return start_time(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def descendants(pid: int) -> dict[int, int | None]:
    """`{pid: start time}` of every living descendant of `pid` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc") if Path("/proc").is_dir() else ():
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found: dict[int, int | None] = {}
    stack = list(children.get(pid, ()))
    while stack:
        child = stack.pop()
        if child not in found:
            found[child] = start_time(child)
            stack.extend(children.get(child, ()))
    return found


def terminate(processes: dict[int, int | None], grace_s: float = TERM_GRACE_S) -> list[int]:
    """SIGTERM each still-running process of `{pid: start time}`, SIGKILL what remains after `grace_s`."""
    signalled = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid, started in processes.items() if is_alive(pid, started)]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                signalled.append(pid)
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 1.0)
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [pid for pid in alive if is_alive(pid, processes[pid])]
        if not alive:
            break
    return signalled


# ---------------------------------------------------------------------------------------------
# Children we start ourselves
# ---------------------------------------------------------------------------------------------
def die_with_parent(expected_parent: int | None = None) -> None:
    """Asks the kernel to SIGKILL this process when its parent dies. No-op off Linux."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if expected_parent is not None and os.getppid() != expected_parent:  # it died before prctl took effect
        os._exit(1)


def dies_with_parent(command: list[str]) -> list[str]:
    """`command` wrapped so that the process dies with the one that starts it (see the module doc)."""
    if not sys.platform.startswith("linux"):
        return list(command)
    return [sys.executable, "-m", "homefeed.lifetime", "exec", str(os.getpid()), "--", *command]


def _exec_with_parent_death(parent: int, command: list[str]) -> None:
    die_with_parent(parent)
    os.execvp(command[0], command)


# ---------------------------------------------------------------------------------------------
# Children a library starts: the watchdog
# ---------------------------------------------------------------------------------------------
def _on_sigterm(signum, frame) -> None:
    LOG.warning("SIGTERM: stopping child processes and exiting")
    terminate(descendants(os.getpid()))
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def children_die_with_me(name: str = "") -> Iterator[None]:
    """Within the block, this process's descendants die with it, whatever kills it.

    Starts the watchdog (`python -m homefeed.lifetime PID`) and, in the main thread, turns SIGTERM
    into an orderly exit that first stops the descendants. On leaving the block normally (or by an
    exception) the watchdog is told goodbye and leaves the children alone.
    """
    if not Path("/proc").is_dir():
        yield
        return
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "homefeed.lifetime", "watch", str(os.getpid()), name],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=None,
        start_new_session=True,  # a terminal's Ctrl-C or a kill of our group must not reach it
        close_fds=True,
    )
    assert watchdog.stdin is not None  # stdin=PIPE
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(OSError, ValueError):
            watchdog.stdin.write(GOODBYE)
            watchdog.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            watchdog.wait(timeout=5)


def watch(pid: int, name: str = "", poll_s: float = 0.2) -> int:
    """The watchdog's loop: follow `pid`'s descendants until goodbye or `pid`'s death."""
    seen: dict[int, int | None] = {}
    stdin = sys.stdin.buffer
    received = b""
    while True:
        seen.update(descendants(pid))
        seen.pop(os.getpid(), None)
        ready, _, _ = select.select([stdin], [], [], poll_s)
        if ready:
            chunk = os.read(stdin.fileno(), 64)
            received += chunk
            if GOODBYE in received:
                return 0
            if chunk:
                continue
            # End of file without goodbye: the parent died (its end of the pipe closed with it).
            break
        if not is_alive(pid):
            break
    # The parent is gone: the processes it left are now orphans; kill them and everything below.
    seen.update({p: s for root in list(seen) for p, s in descendants(root).items()})
    seen.pop(os.getpid(), None)
    killed = terminate(seen)
    if killed:
        print(
            f"homefeed watchdog: {name or 'process'} {pid} died; stopped {len(set(killed))} child process(es)",
            file=sys.stderr,
        )
    return 0


# ---------------------------------------------------------------------------------------------
# Scratch directories that say who owns them
# ---------------------------------------------------------------------------------------------
def owner_tag() -> str:
    """`p<pid>t<start>b<boot>-<random>`: names this process (not reused across reboots)."""
    return f"p{os.getpid()}t{start_time(os.getpid()) or 0}b{boot_id()}-{secrets.token_hex(4)}"


def owned_name(prefix: str) -> str:
    return f"{prefix}{owner_tag()}"


def owned_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """Creates `parent/<prefix><owner tag>` (mode 0755) and returns it."""
    path = Path(parent) / owned_name(prefix)
    path.mkdir(mode=0o755)
    return path


def owner_alive(name: str) -> bool:
    """Whether the process named in an owned directory's name still runs (unknown names: True)."""
    match = _OWNER.search(name)
    if match is None:
        return True
    if match.group("boot") != boot_id():
        return False
    return is_alive(int(match.group("pid")), int(match.group("start")) or None)


def remove_stale_dirs(parent: str | os.PathLike, prefix: str) -> list[Path]:
    """Removes `parent/<prefix>*` directories whose owner process is gone; returns them."""
    parent = Path(parent)
    removed = []
    for path in sorted(parent.glob(f"{prefix}*")) if parent.is_dir() else []:
        if path.is_dir() and not owner_alive(path.name):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        LOG.info("removed %d folder(s) left by killed runs: %s", len(removed), ", ".join(p.name for p in removed))
    return removed


if __name__ == "__main__":
    # python -m homefeed.lifetime watch PID [NAME]      the watchdog of children_die_with_me
    # python -m homefeed.lifetime exec PID -- COMMAND   run COMMAND so that it dies with PID
    if sys.argv[1] == "exec":
        _exec_with_parent_death(int(sys.argv[2]), sys.argv[sys.argv.index("--") + 1 :])
    sys.exit(watch(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""))
