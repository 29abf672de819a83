"""Run widget updates on the kernel's own thread.

Why: ipykernel 7 misbehaves when comm messages leave from threads other than the kernel's
(ipykernel #1450/#1451, ipywidgets #4001): in real JupyterLab a cell could stay "running"
for good while a dashboard thread set widget values. So the refresher thread only gathers
data (server snapshots, JPEG encoding, plot rendering) and hands every widget change to the
loop the kernel runs cells on, with ``loop.call_soon_threadsafe``. While a blocking cell
runs, the hand-offs wait and run when it returns; a refresher keeps at most one batch
pending, so a long cell never piles work up.

The loop is found when a widget is created, which happens on the kernel thread. Outside a
kernel (plain Python, scripts, tests) there is no front end to talk to: callables run inline
on the calling thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["KernelThread", "find_kernel_loop"]

logger = logging.getLogger("comfywhip_nb.widgets")


def find_kernel_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop an IPython kernel runs cells on, or None outside a kernel.

    Called on the kernel thread: ipykernel 7 runs each cell inside a coroutine on its main
    loop, so the running loop is the one. Elsewhere, the kernel's tornado ``io_loop``
    wraps the same asyncio loop.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None
    with contextlib.suppress(RuntimeError):
        return asyncio.get_running_loop()
    io_loop = getattr(kernel, "io_loop", None)
    loop = getattr(io_loop, "asyncio_loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


def _context_for_hand_offs() -> contextvars.Context | None:
    """The context hand-offs run in: None (the thread's own, empty) where ipykernel can
    send from it, else a copy of the caller's (the cell creating the widget).

    ipykernel reads the parent header of what it sends from context variables. 7.1+ falls
    back to the most recent request's (so a widget update is tied to the running cell, which
    is also what nbclient's ``store_widget_state`` records); 7.0 raises ``LookupError`` in a
    context without them, so there the creating cell's parent is used.
    """
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    get_parent = getattr(kernel, "get_parent", None)
    if get_parent is None:
        return None
    try:
        contextvars.Context().run(get_parent, "shell")
    except LookupError:
        return contextvars.copy_context()
    except Exception:  # an older or unknown kernel API: the fallback is the safe choice
        return contextvars.copy_context()
    return None


class KernelThread:
    """Where widget changes are applied: the kernel's loop, or inline outside a kernel.

    ``applied_from`` names the threads that ran hand-offs (tests and notebooks check that
    only the kernel's thread did).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        self.loop = loop
        self.context = context
        self.applied_from: set[str] = set()

    @classmethod
    def current(cls) -> KernelThread:
        """The kernel's loop when called from a kernel (on its thread), else inline."""
        loop = find_kernel_loop()
        return cls(loop, _context_for_hand_offs() if loop is not None else None)

    @property
    def inline(self) -> bool:
        return self.loop is None

    def call(self, fn: Callable[[], Any]) -> bool:
        """Run ``fn`` on the kernel thread (inline when already there or outside a kernel).

        Returns False when the loop is closed (the kernel is shutting down): ``fn`` never
        runs then.
        """
        loop = self.loop
        if loop is None or self._on_loop_thread():
            self._run(fn)
            return True
        try:
            loop.call_soon_threadsafe(self._run, fn, context=self.context)
        except RuntimeError:  # loop closed
            return False
        return True

    def _on_loop_thread(self) -> bool:
        loop = self.loop
        if loop is None:
            return True
        with contextlib.suppress(RuntimeError):
            return asyncio.get_running_loop() is loop
        return False

    def _run(self, fn: Callable[[], Any]) -> None:
        self.applied_from.add(threading.current_thread().name)
        try:
            fn()
        except Exception:  # a callback must never take the kernel's loop down
            logger.exception("WHIP: widget update failed")
