"""Keeps orbax's background-thread reports of a failed checkpoint write off stderr.

When a write fails (disk full, file too large, read-only directory), orbax logs the
exception from each of its worker threads, asyncio reports its orphaned write tasks
("... exception was never retrieved"), and tensorstore's pending callbacks report
"Event loop is closed" as unraisable exceptions: dozens of traceback lines for one
fault. memflax.checkpoint re-raises the failure as one CheckpointWriteError with the
reason, so those reports carry nothing new; these filters drop exactly them and leave
every other log record and unraisable exception alone.
"""

from __future__ import annotations

import logging
import sys
import warnings

_installed = False


class _OrbaxErrors(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    from_orbax = '/orbax/' in record.pathname.replace('\\', '/')
    return not (from_orbax and record.levelno >= logging.ERROR)


class _OrbaxOrphanTasks(logging.Filter):
  """asyncio's "Task exception was never retrieved" (or "_GatheringFuture exception ...")
  for an orbax write."""

  def filter(self, record: logging.LogRecord) -> bool:
    try:
      text = record.getMessage()
    except Exception:  # noqa: BLE001 -- a record we cannot format is not ours to drop
      return True
    return not ('exception was never retrieved' in text and 'orbax' in text)


def _quiet_unraisable(previous):
  def hook(unraisable):
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == 'Event loop is closed':
      return  # a tensorstore callback into the loop of an aborted orbax write
    previous(unraisable)
  return hook


def install() -> None:
  """Idempotent; called by every Checkpointer."""
  global _installed
  if _installed:
    return
  _installed = True
  logging.getLogger('absl').addFilter(_OrbaxErrors())
  logging.getLogger('asyncio').addFilter(_OrbaxOrphanTasks())
  # ... and the write coroutines it abandoned, when they are garbage-collected.
  warnings.filterwarnings('ignore', message=r"coroutine 'async_serialize_from_host",
                          category=RuntimeWarning)
  sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)
