"""Immutable per-task snapshots: `<workdir>/snapshots/<index>_<task>`, one orbax checkpoint each.

A snapshot holds the parameters and optimizer state at the end of task `index`
(items `params`, `opt_state`), the model's external store when it has one (item `memory`, e.g.
a kNN store, memflax.train.MemoryTrainState), the replay buffer when the strategy keeps one
(item `replay`: arrays only), and JSON metadata (item `meta`: the run's config, the task's config, the
accuracy row measured on every task of the sequence at that point, the replay slot
table). It lives outside `<workdir>/checkpoints`, so the rolling step checkpoints'
`max_to_keep` cleanup never sees it; it is written once (orbax writes a temporary
directory and renames it into place when complete, so a kill mid-write leaves no
half snapshot under the final name), never overwritten (`save` refuses an existing
name), and its files are made read-only. No pickle: arrays are orbax/tensorstore,
metadata JSON. An integrity record (memflax.integrity: format version, digest of every
array and of the metadata) is saved with it and checked whenever it is read, so a
damaged snapshot raises SnapshotCorruptError instead of loading wrong numbers.
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

from memflax import integrity
from memflax.checkpoint import IncompatibleCheckpointError

SNAPSHOT_DIR = 'snapshots'
_NAME = re.compile(r'^(\d+)_([A-Za-z0-9_]+)$')


class SnapshotNotFoundError(FileNotFoundError):
  """The named snapshot does not exist (or is not a finished snapshot)."""


class IncompatibleSnapshotError(IncompatibleCheckpointError):
  """A snapshot of another model, interface or parameter layout (or format)."""


class SnapshotCorruptError(FileNotFoundError):
  """A snapshot whose files do not read back as what was saved."""


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


def _record(path: Path) -> dict:
  try:
    text = (path / integrity.ITEM / 'metadata').read_text()
  except FileNotFoundError:
    text = None
  except (OSError, UnicodeDecodeError):
    text = ''
  try:
    return integrity.read_record(text)
  except integrity.FormatError as e:
    raise IncompatibleSnapshotError(f'snapshot {path}: {e}') from None
  except integrity.CorruptError as e:
    raise SnapshotCorruptError(f'snapshot {path} is corrupt: {e}') from None


def _check(path: Path, check, *args) -> None:
  try:
    check(*args)
  except integrity.CorruptError as e:
    raise SnapshotCorruptError(f'snapshot {path} is corrupt: {e}') from None


def read_meta(path: str | Path) -> dict:
  """A snapshot's JSON metadata, checked against its integrity record (reads two small
  files; safe before validation)."""
  path = Path(path)
  try:
    meta = json.loads(_meta_path(path).read_text())
  except FileNotFoundError as e:
    raise SnapshotNotFoundError(f'{path} is not a readable snapshot ({e})') from None
  except (OSError, ValueError) as e:
    raise SnapshotCorruptError(f'snapshot {path} is corrupt: its metadata is unreadable '
                               f'({type(e).__name__})') from None
  _check(path, integrity.check_document, _record(path), 'meta', meta)
  return meta


def _checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save(path: str | Path, state: dict, meta: dict, replay: dict | None = None) -> Path:
  """Writes a snapshot at `path` (absolute), synchronously; refuses to overwrite one.

  state: {'params': ..., 'opt_state': ...} and, for a model with a store, 'memory';
  replay: {name: array} or None; meta: JSON.
  """
  path = Path(path).absolute()
  if path.exists():
    raise FileExistsError(f'snapshot {path} exists; snapshots are immutable')
  trees = {'params': state['params'], 'opt_state': state['opt_state']}
  if state.get('memory') is not None:
    trees['memory'] = state['memory']
  if replay:
    trees['replay'] = replay
  items = {name: ocp.args.StandardSave(tree) for name, tree in trees.items()}
  items['meta'] = ocp.args.JsonSave(meta)
  items[integrity.ITEM] = ocp.args.JsonSave(integrity.make_record(trees, {'meta': meta}))
  checkpointer = _checkpointer()
  try:
    checkpointer.save(path, args=ocp.args.Composite(**items))
  finally:
    checkpointer.close()
  make_read_only(path)
  return path


def make_read_only(path: str | Path) -> None:
  """Immutability the file system also enforces. Idempotent: the runner reapplies it to
  every finished snapshot, since a kill between orbax's rename and this leaves one
  writable."""
  if jax.process_index() != 0:
    return
  for root, _, files in os.walk(path):
    for f in files:
      p = os.path.join(root, f)
      os.chmod(p, os.stat(p).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def restore_params(path: str | Path, abstract_params: Any) -> Any:
  """The snapshot's params restored into `abstract_params`' structure, shapes and
  shardings; IncompatibleSnapshotError when the layout differs, SnapshotCorruptError
  when they do not match the integrity record."""
  return _restore(path, {'params': abstract_params})['params']


def restore_memory(path: str | Path, abstract_memory: Any) -> Any:
  """The snapshot's external store (item `memory`), restored like restore_params."""
  return _restore(path, {'memory': abstract_memory})['memory']


def verify(path: str | Path, abstract_state: dict) -> None:
  """Reads everything the snapshot holds (abstract_state: {'params', 'opt_state'} and
  'memory' for a model with a store, of jax.ShapeDtypeStruct) and checks it against the
  integrity record; raises SnapshotCorruptError or IncompatibleSnapshotError."""
  read_meta(path)
  _restore(path, dict(abstract_state))
  restore_replay(path)


def _restore(path: str | Path, abstract: dict) -> dict:
  path = Path(path).absolute()
  record = _record(path)
  checkpointer = _checkpointer()
  try:
    restored = checkpointer.restore(path, args=ocp.args.Composite(
        **{name: ocp.args.StandardRestore(tree) for name, tree in abstract.items()}))
  except (ValueError, KeyError) as e:
    text = str(e).lower()
    if 'tree structures do not match' in text or 'shape' in text:
      raise IncompatibleSnapshotError(
          f'snapshot {path} does not fit this model ({str(e).splitlines()[0][:160]})') from None
    raise SnapshotCorruptError(f'snapshot {path} is corrupt: unreadable '
                               f'({str(e).splitlines()[0][:160]})') from None
  except Exception as e:  # noqa: BLE001 -- tensorstore/ocdbt read failures: damaged files
    raise SnapshotCorruptError(f'snapshot {path} is corrupt: unreadable '
                               f'({(str(e).splitlines() or [type(e).__name__])[0][:160]})') from None
  finally:
    checkpointer.close()
  for name in abstract:
    _check(path, integrity.check_tree, record, name, restored[name])
  return restored


def restore_replay(path: str | Path) -> dict:
  """The snapshot's replay arrays as numpy ({} if it holds none), checked against the
  integrity record."""
  path = Path(path).absolute()
  if not (path / 'replay').is_dir():
    return {}
  record = _record(path)
  checkpointer = _checkpointer()
  try:
    restored = checkpointer.restore(path, args=ocp.args.Composite(
        replay=ocp.args.StandardRestore()))
  except Exception as e:  # noqa: BLE001 -- any read failure of a finished snapshot is damage
    raise SnapshotCorruptError(f'snapshot {path} is corrupt: unreadable replay buffer '
                               f'({(str(e).splitlines() or [type(e).__name__])[0][:160]})') from None
  finally:
    checkpointer.close()
  replay = jax.tree.map(jax.device_get, dict(restored['replay']))
  _check(path, integrity.check_tree, record, 'replay', replay)
  return replay
