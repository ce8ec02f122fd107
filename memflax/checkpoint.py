"""Checkpoints of a run: an orbax CheckpointManager over `<workdir>/checkpoints`.

One checkpoint = the train state (params, optimizer state, step, RNG; the data
position is the step, since batches are a pure function of (seed, step)), the
run's config as JSON, and host-side progress as JSON (`progress`: cumulative
training wall clock, so a resumed run's `train_time_s` carries on). Saves are asynchronous and atomic (orbax writes a temporary
directory and renames it when complete), so a run killed mid-save leaves the
previous checkpoints intact.

A checkpoint that fails to restore (truncated or corrupt files) is never deleted:
it is moved to `<workdir>/corrupt_checkpoints/` with one warning line, and the
next newest one is tried.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

CHECKPOINT_DIR = 'checkpoints'
QUARANTINE_DIR = 'corrupt_checkpoints'


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint of a different model or task."""


def checkpoint_dir(workdir: str | Path) -> Path:
  return Path(workdir) / CHECKPOINT_DIR


def _committed_steps(workdir: str | Path) -> list[int]:
  """Finished checkpoints (orbax renames a step directory into place only when complete)."""
  root = checkpoint_dir(workdir)
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def stored_config(workdir: str | Path) -> dict | None:
  """The config JSON of the newest readable checkpoint, or None if there is none.

  Reads files only (no manager, nothing created), so it is safe before validation.
  """
  for step in reversed(_committed_steps(workdir)):
    try:
      return json.loads((checkpoint_dir(workdir) / str(step) / 'config' / 'metadata').read_text())
    except (OSError, ValueError):
      continue
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
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           cleanup_tmp_directories=True,
                                           enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(checkpoint_dir(self.workdir), options=options,
                                          item_names=('state', 'config', 'progress'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, config_dict: dict, progress: dict | None = None) -> None:
    """Starts an async save; returns once the arrays are copied off the step's buffers.

    progress: small JSON-able host values to restore with the state (e.g. train_time_s).
    """
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     config=ocp.args.JsonSave(config_dict),
                                                     progress=ocp.args.JsonSave(progress or {})))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def restore_newest(self, abstract_state: Any) -> tuple[Any, int, dict] | None:
    """(state, step, progress) of the newest checkpoint that reads back; None if none.

    `abstract_state` is a pytree of jax.ShapeDtypeStruct (with shardings) that
    says what to restore into.
    """
    while (step := self._manager.latest_step()) is not None:
      try:
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        return restored['state'], step, self._progress(step)
      except Exception as e:  # noqa: BLE001 -- any failure to read means "not usable"
        if _is_structure_mismatch(e):
          # Readable but for another state layout: the run is misconfigured, the
          # checkpoint is fine. Leave it where it is.
          raise IncompatibleCheckpointError(
              f'checkpoint at step {step} in {self.workdir} does not match this run\'s model/'
              f'optimizer state ({str(e).splitlines()[0][:160]}); use another --workdir') from None
        self._quarantine(step, e)
    return None

  def _progress(self, step: int) -> dict:
    path = checkpoint_dir(self.workdir) / str(step) / 'progress' / 'metadata'
    try:
      return json.loads(path.read_text())
    except (OSError, ValueError):
      return {}  # written by a version without progress, or unreadable: start the clock at 0

  def _quarantine(self, step: int, error: Exception) -> None:
    target = self.workdir / QUARANTINE_DIR / f'{step}-{int(time.time())}'
    reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    if jax.process_index() == 0:
      print(f'warning: checkpoint at step {step} is unreadable ({reason}); moved it to '
            f'{target} and resuming from the previous one', file=sys.stderr, flush=True)
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.move(str(checkpoint_dir(self.workdir) / str(step)), str(target))
    multihost_utils.sync_global_devices(f'quarantine_{step}')
    self._manager.reload()
