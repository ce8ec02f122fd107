"""Checkpoints of a run: an orbax CheckpointManager over `<workdir>/checkpoints`.

One checkpoint = the train state (params, optimizer state, step, RNG; the data
position is the step, since batches are a pure function of (seed, step)), the
run's config as JSON, and host-side progress as JSON (`progress`: cumulative
training wall clock, so a resumed run's `train_time_s` carries on). Saves are asynchronous and atomic (orbax writes a temporary
directory and renames it when complete), so a run killed mid-save leaves the
previous checkpoints intact.

Each checkpoint also holds an integrity record (memflax.integrity: format version,
SHA-256 of every array and JSON document), checked on restore, so a flipped bit that
orbax would load as different numbers is caught.

A checkpoint that fails to restore or to verify is never deleted: once an older
good one is found, the bad newer ones are moved to `<workdir>/corrupt_checkpoints/`
with one warning line each and the run resumes from the good one. When none is good,
the run stops with one error line and moves nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from memflax import integrity, orbax_noise, peer_watchdog

CHECKPOINT_DIR = 'checkpoints'
QUARANTINE_DIR = 'corrupt_checkpoints'


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint of a different model or task (or format)."""


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (disk full, file too large, read-only directory)."""


class NoGoodCheckpointError(FileNotFoundError):
  """Every checkpoint in the workdir is unreadable or fails its integrity check."""


def checkpoint_dir(workdir: str | Path) -> Path:
  return Path(workdir) / CHECKPOINT_DIR


def _committed_steps(workdir: str | Path) -> list[int]:
  """Finished checkpoints (orbax renames a step directory into place only when complete)."""
  root = checkpoint_dir(workdir)
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def _item_text(step_dir: Path, item: str) -> str | None:
  try:
    return (step_dir / item / 'metadata').read_text()
  except (OSError, UnicodeDecodeError):
    return None


def _verified_documents(step_dir: Path) -> tuple[dict, dict, dict]:
  """(record, config, progress) of a checkpoint directory, checked against its record.

  Raises integrity.FormatError (no record, or a newer format) or integrity.CorruptError.
  """
  record = integrity.read_record(_item_text(step_dir, integrity.ITEM))
  documents = {}
  for name in ('config', 'progress'):
    try:
      documents[name] = json.loads(_item_text(step_dir, name))
    except (TypeError, ValueError):
      raise integrity.CorruptError(f'its {name} document is unreadable') from None
    integrity.check_document(record, name, documents[name])
  return record, documents['config'], documents['progress']


def stored_config(workdir: str | Path) -> dict | None:
  """The config JSON of the newest checkpoint whose documents verify, or None if none.

  Reads files only (no manager, nothing created), so it is safe before validation.
  Raises IncompatibleCheckpointError for a checkpoint of a newer or older format.
  """
  for step in reversed(_committed_steps(workdir)):
    try:
      return _verified_documents(checkpoint_dir(workdir) / str(step))[1]
    except integrity.CorruptError:
      continue  # the restore reports it (and falls back past it)
    except integrity.FormatError as e:
      raise IncompatibleCheckpointError(f'checkpoint at step {step} in {workdir}: {e}') from None
  return None


def check_compatible(workdir: str | Path, config_dict: dict) -> None:
  """Raises IncompatibleCheckpointError if the workdir's checkpoint is of another model/task."""
  stored = stored_config(workdir)
  if stored is None:
    return
  # These fields decide the shapes and structure of params and optimizer state.
  for section in ('model', 'task', 'optimizer'):
    if stored.get(section) != config_dict.get(section):
      raise IncompatibleCheckpointError(
          f'{workdir} holds a checkpoint of a different {section} '
          f'(stored {section}={stored.get(section)}, this run {section}='
          f'{config_dict.get(section)}); use another --workdir or the stored settings')


def _is_structure_mismatch(error: Exception) -> bool:
  text = str(error)
  return 'tree structures do not match' in text or 'Requested shape' in text \
      or 'shape mismatch' in text.lower()


class Checkpointer:
  """Async save / newest-good restore for one workdir."""

  def __init__(self, workdir: str | Path, keep: int = 3):
    # orbax needs an absolute path; a relative one fails at the first save.
    self.workdir = Path(workdir).expanduser().absolute()
    orbax_noise.install()
    self._pending_step = None  # the step of the save in flight
    self._failed = False
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           cleanup_tmp_directories=True,
                                           enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(checkpoint_dir(self.workdir), options=options,
                                          item_names=('state', 'config', 'progress',
                                                      integrity.ITEM))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, config_dict: dict, progress: dict | None = None) -> None:
    """Starts an async save; returns once the arrays are copied off the step's buffers.

    progress: small JSON-able host values to restore with the state (e.g. train_time_s).
    The integrity record is computed here, from the same arrays (a host copy of the
    replicated state: one sync, at checkpoint steps only).
    """
    host_state = jax.tree.map(integrity.host_array, state)  # one device->host copy
    bad = integrity.first_nonfinite(host_state)
    if bad is not None:  # the loop stops before this; a checkpoint must never hold NaN
      raise ValueError(f'refusing to save step {step}: state{bad} is not finite')
    progress = dict(progress or {})
    record = integrity.make_record({'state': host_state}, {'config': config_dict,
                                                           'progress': progress})
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config_dict),
          progress=ocp.args.JsonSave(progress),
          **{integrity.ITEM: ocp.args.JsonSave(record)}))
    except Exception as e:  # noqa: BLE001 -- this save's or the previous async save's failure
      raise self._write_error(self._pending_step or step, e) from None
    self._pending_step = step

  def wait(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._write_error(self._pending_step, e) from None
    self._pending_step = None

  def close(self) -> None:
    """Waits for the save in flight; a failure is raised once (not again when an earlier
    call already reported it)."""
    try:
      if not self._failed:
        self.wait()
    finally:
      try:
        self._manager.close()
      except Exception:  # noqa: BLE001 -- the write failure was raised already
        if not self._failed:
          raise

  def _write_error(self, step: int | None, error: Exception) -> Exception:
    """The error to raise for a failed write: CheckpointWriteError (disk full, ...), or
    in a multi-process run whose peer died (orbax's closing barrier timed out) the
    original error, which peer_watchdog reports as a lost process like any collective's."""
    self._failed = True
    if jax.process_count() > 1 and peer_watchdog.lost_peer_cause(error) is not None:
      return error
    text = str(error)
    code = re.search(r"os_error_code='(\d+)'", text)
    reason = os.strerror(int(code.group(1))) if code else \
        (text.splitlines() or [type(error).__name__])[0][:200]
    kept = _committed_steps(self.workdir)
    return CheckpointWriteError(
        f'cannot write the checkpoint{"" if step is None else f" at step {step}"} in '
        f'{checkpoint_dir(self.workdir)}: {reason}; the checkpoints already there are intact '
        f'(newest: {f"step {kept[-1]}" if kept else "none"}); free space and rerun to resume')

  def restore_newest(self, abstract_state: Any) -> tuple[Any, int, dict] | None:
    """(state, step, progress) of the newest checkpoint that reads back and verifies;
    None if the workdir has no checkpoint.

    `abstract_state` is a pytree of jax.ShapeDtypeStruct (with shardings) that says
    what to restore into. Bad checkpoints newer than the good one are quarantined;
    NoGoodCheckpointError (nothing moved) when no checkpoint is good.
    """
    bad = []
    for step in reversed(self._manager.all_steps()):
      try:
        state, progress = self._restore_verified(step, abstract_state)
      except integrity.CorruptError as e:
        bad.append((step, str(e)))
        continue
      for bad_step, reason in bad:
        self._quarantine(bad_step, reason)
      return state, step, progress
    if bad:
      reasons = '; '.join(f'step {s}: {r}' for s, r in bad)
      raise NoGoodCheckpointError(
          f'no checkpoint in {checkpoint_dir(self.workdir)} is readable ({reasons}); nothing '
          'was moved or deleted: move the checkpoints directory away to start afresh')
    return None

  def _restore_verified(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    step_dir = checkpoint_dir(self.workdir) / str(step)
    try:
      record, _, progress = _verified_documents(step_dir)
    except integrity.FormatError as e:
      raise IncompatibleCheckpointError(f'checkpoint at step {step} in {self.workdir}: {e}') \
          from None
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    except Exception as e:  # noqa: BLE001 -- any failure to read means "not usable"
      if _is_structure_mismatch(e):
        # Readable but for another state layout: the run is misconfigured, the
        # checkpoint is fine. Leave it where it is.
        raise IncompatibleCheckpointError(
            f'checkpoint at step {step} in {self.workdir} does not match this run\'s model/'
            f'optimizer state ({str(e).splitlines()[0][:160]}); use another --workdir') from None
      reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
      raise integrity.CorruptError(f'unreadable ({reason})') from None
    integrity.check_tree(record, 'state', restored['state'])
    return restored['state'], progress

  def _quarantine(self, step: int, reason: str) -> None:
    target = self.workdir / QUARANTINE_DIR / f'{step}-{int(time.time())}'
    if jax.process_index() == 0:
      print(f'warning: checkpoint at step {step} is corrupt ({reason}); moved it to '
            f'{target} and resuming from an older one', file=sys.stderr, flush=True)
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.move(str(checkpoint_dir(self.workdir) / str(step)), str(target))
    multihost_utils.sync_global_devices(f'quarantine_{step}')
    self._manager.reload()
