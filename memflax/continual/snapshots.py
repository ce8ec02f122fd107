"""Immutable per-task snapshots: `<workdir>/snapshots/<index>_<task>`, one orbax checkpoint each.

A snapshot holds the parameters and optimizer state at the end of task `index`
(items `params`, `opt_state`), the replay buffer when the strategy keeps one (item `replay`: arrays
only), and JSON metadata (item `meta`: the run's config, the task's config, the
accuracy row measured on every task of the sequence at that point, the replay slot
table). It lives outside `<workdir>/checkpoints`, so the rolling step checkpoints'
`max_to_keep` cleanup never sees it; it is written once (orbax writes a temporary
directory and renames it into place when complete, so a kill mid-write leaves no
half snapshot under the final name), never overwritten (`save` refuses an existing
name), and its files are made read-only. No pickle: arrays are orbax/tensorstore,
metadata JSON.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from memflax.checkpoint import IncompatibleCheckpointError

SNAPSHOT_DIR = 'snapshots'
_NAME = re.compile(r'^(\d+)_([A-Za-z0-9_]+)$')


class SnapshotNotFoundError(FileNotFoundError):
  """The named snapshot does not exist (or is not a finished snapshot)."""


class IncompatibleSnapshotError(IncompatibleCheckpointError):
  """A snapshot of another model, interface or parameter layout."""


def snapshot_name(index: int, task_name: str) -> str:
  return f'{index}_{task_name}'


def snapshot_root(workdir: str | Path) -> Path:
  return Path(workdir) / SNAPSHOT_DIR


def _meta_path(path: Path) -> Path:
  return path / 'meta' / 'metadata'


def list_snapshots(workdir: str | Path) -> list[tuple[int, str, Path]]:
  """Finished snapshots (index, name, path), by index. Temporary orbax directories
  (names with a '.orbax-checkpoint-tmp' suffix) never match the name pattern."""
  root = snapshot_root(workdir)
  if not root.is_dir():
    return []
  found = []
  for p in root.iterdir():
    m = _NAME.match(p.name)
    if m and p.is_dir() and _meta_path(p).is_file():
      found.append((int(m.group(1)), p.name, p))
  return sorted(found)


def resolve(workdir: str | Path, which: str) -> Path:
  """A snapshot by index ('1'), name ('1_repeat_copy') or path; SnapshotNotFoundError if none."""
  which = str(which).strip()
  snaps = list_snapshots(workdir) if workdir is not None else []
  for index, name, path in snaps:
    if which == name or (which.isdigit() and int(which) == index):
      return path
  path = Path(which).expanduser()
  if not which.isdigit() and path.is_dir() and _meta_path(path).is_file():
    return path.absolute()
  known = ', '.join(name for _, name, _ in snaps) or 'none'
  where = f' in {snapshot_root(workdir)}' if workdir is not None else ''
  raise SnapshotNotFoundError(f'no snapshot {which!r}{where} (snapshots there: {known})')


def read_meta(path: str | Path) -> dict:
  """A snapshot's JSON metadata (reads one file; safe before validation)."""
  try:
    return json.loads(_meta_path(Path(path)).read_text())
  except (OSError, ValueError) as e:
    raise SnapshotNotFoundError(f'{path} is not a readable snapshot ({e})') from None


def _checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save(path: str | Path, state: dict, meta: dict, replay: dict | None = None) -> Path:
  """Writes a snapshot at `path` (absolute), synchronously; refuses to overwrite one.

  state: {'params': ..., 'opt_state': ...}; replay: {name: array} or None; meta: JSON.
  """
  path = Path(path).absolute()
  if path.exists():
    raise FileExistsError(f'snapshot {path} exists; snapshots are immutable')
  items = dict(params=ocp.args.StandardSave(state['params']),
               opt_state=ocp.args.StandardSave(state['opt_state']), meta=ocp.args.JsonSave(meta))
  if replay:
    items['replay'] = ocp.args.StandardSave(replay)
  checkpointer = _checkpointer()
  try:
    checkpointer.save(path, args=ocp.args.Composite(**items))
  finally:
    checkpointer.close()
  if jax.process_index() == 0:
    for root, _, files in os.walk(path):
      for f in files:  # read-only: immutability the file system also enforces
        p = os.path.join(root, f)
        os.chmod(p, os.stat(p).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
  return path


def restore_params(path: str | Path, abstract_params: Any) -> Any:
  """The snapshot's params restored into `abstract_params`' structure, shapes and
  shardings; IncompatibleSnapshotError when the layout differs."""
  checkpointer = _checkpointer()
  try:
    restored = checkpointer.restore(Path(path).absolute(), args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))
  except (ValueError, KeyError) as e:
    raise IncompatibleSnapshotError(
        f'snapshot {path} does not fit this model ({str(e).splitlines()[0][:160]})') from None
  finally:
    checkpointer.close()
  return restored['params']


def restore_replay(path: str | Path) -> dict:
  """The snapshot's replay arrays as numpy ({} if it holds none)."""
  path = Path(path).absolute()
  if not (path / 'replay').is_dir():
    return {}
  checkpointer = _checkpointer()
  try:
    restored = checkpointer.restore(path, args=ocp.args.Composite(
        replay=ocp.args.StandardRestore()))
  finally:
    checkpointer.close()
  return jax.tree.map(jax.device_get, dict(restored['replay']))
