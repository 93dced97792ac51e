"""The Blender worker process: ``python -m sim.render.blender.worker --fd N --dir D``.

Started by ``sim.render.blender.client.BlenderRenderer``; talks only over the socket ``N``
(pickled ``(kind, payload)`` messages through ``multiprocessing.connection``), never over
stdout, which Blender fills with progress lines. Requests: ``configure`` (CyclesSettings),
``frame`` (FrameRequest -> FrameResult), ``bare`` (time ``bpy.ops.render.render``),
``sleep`` (seconds; a debug ping), ``close``. Replies: ``("ok", result)`` or
``("error", one line)``; the first message is ``("ready", pid)`` or ``("fatal", why)``.

It ignores SIGINT (the parent decides when to stop), and exits when its pipe closes or its
parent dies (PR_SET_PDEATHSIG where asked for, plus a thread watching the parent pid).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

log = logging.getLogger("sim.render.blender.worker")

PR_SET_PDEATHSIG = 1


def _die_with_parent(use_pdeathsig: bool) -> None:
    """Exit when the parent process goes away, even in the middle of a render."""
    ppid = os.getppid()
    if use_pdeathsig and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass

    def watch() -> None:
        while True:
            if os.getppid() != ppid:
                os._exit(0)
            time.sleep(1.0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != ppid:  # the parent died before prctl took effect
        os._exit(0)


def serve(conn: Connection, workdir: Path) -> None:
    """Answer requests until the pipe closes or a ``close`` request arrives."""
    try:
        import bpy  # noqa: F401
    except ImportError as e:
        conn.send(
            (
                "fatal",
                f"the Blender backend needs bpy, which {sys.executable} cannot import ({e}); "
                "run `bash scripts/setup.sh` to install it",
            )
        )
        return
    from sim.render.blender.scene import BlenderScene

    conn.send(("ready", os.getpid()))
    scene: BlenderScene | None = None
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            return
        if kind == "close":
            return
        try:
            result: Any = None
            if kind == "configure":
                scene = BlenderScene(payload, workdir)
            elif kind == "sleep":
                time.sleep(float(payload))
            elif scene is None:
                raise RuntimeError(f"{kind!r} before configure")
            elif kind == "frame":
                result = scene.frame(payload)
            elif kind == "bare":
                result = scene.time_bare_render(int(payload))
            else:
                raise ValueError(f"unknown request {kind!r}")
        except Exception as e:  # noqa: BLE001 - reported to the parent, the worker goes on
            log.exception("request %s failed", kind)
            reply: tuple[str, Any] = ("error", f"{type(e).__name__}: {e}".splitlines()[0])
        else:
            reply = ("ok", result)
        try:
            conn.send(reply)
        except OSError:
            return


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, detach from the terminal's Ctrl-C and serve."""
    ap = argparse.ArgumentParser(prog="python -m sim.render.blender.worker")
    ap.add_argument("--fd", type=int, required=True, help="the socket to talk over")
    ap.add_argument("--dir", type=Path, required=True, help="where frame files go")
    ap.add_argument("--pdeathsig", action="store_true", help="die with the parent (Linux)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(args.pdeathsig)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    conn = Connection(args.fd)
    try:
        serve(conn, args.dir)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
