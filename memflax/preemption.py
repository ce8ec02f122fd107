"""SIGTERM as a request to stop cleanly: what a preempted TPU VM or a cluster scheduler sends.

While `handling()` is active (train_and_evaluate and train_sequence hold it), SIGTERM
only sets a flag; the training loop sees it before its next step, saves a checkpoint
at the step it reached and raises `Preempted`, which the command line turns into one
line and exit status 0. A rerun of the same command resumes from exactly that step.
Outside the loop (compiling, writing a snapshot, evaluating) the flag waits for the
next step or task boundary, so nothing being written is cut short. A second SIGTERM
ends the process at once (what `timeout` or an impatient scheduler expects); what is
on disk is then whatever the atomic writes had finished, as after SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading

_requested = threading.Event()
_depth = 0


class Preempted(Exception):
  """The run stopped on SIGTERM with everything it did saved; the message says where."""

  @classmethod
  def at_step(cls, step: int, where: str) -> 'Preempted':
    return cls(f'SIGTERM: saved a checkpoint at step {step} in {where}; rerun the same '
               'command to resume from it')


def requested() -> bool:
  return _requested.is_set()


def request() -> None:
  """What the SIGTERM handler does (also callable directly, e.g. from a notebook)."""
  _requested.set()


def _watch(receiver: socket.socket) -> None:
  """Counts SIGTERMs as the interpreter's C-level handler reports them on the wakeup
  socket: at once, even while the main thread sits in a long XLA compile, where a Python
  handler would only run after it returns."""
  while True:
    try:
      data = receiver.recv(64)
    except OSError:
      return
    if not data:
      return
    for signum in data:
      if signum != signal.SIGTERM:
        continue
      if requested():  # the second one: stop now, as SIGTERM's default action would
        os._exit(128 + signal.SIGTERM)
      request()


@contextlib.contextmanager
def handling():
  """Routes SIGTERM to `request()` for the duration (nestable). Signal handlers can only
  be installed from the main thread; elsewhere (a notebook's worker thread) SIGTERM keeps
  its default meaning and `request()` still works."""
  global _depth
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  if _depth:
    _depth += 1
    try:
      yield
    finally:
      _depth -= 1
    return
  _requested.clear()
  receiver, sender = socket.socketpair()
  sender.setblocking(False)
  previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: None)
  previous_fd = signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
  threading.Thread(target=_watch, args=(receiver,), daemon=True,
                   name='memflax-sigterm').start()
  _depth = 1
  try:
    yield
  finally:
    _depth = 0
    signal.set_wakeup_fd(previous_fd)
    signal.signal(signal.SIGTERM, previous_handler)
    sender.close()  # the watcher's recv returns b'' and it ends
    receiver.close()
