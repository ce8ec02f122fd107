"""A run's workdir: one absolute path, checked before use, held by one run at a time.

Every entry point (train.py, eval.py, `train_and_evaluate`, `evaluate.restore`)
resolves the user's path here once, so a relative `--workdir=runs/x` means the
same directory for the whole run (orbax refuses relative checkpoint paths).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class WorkdirError(ValueError):
  """The workdir cannot be used: not a directory, or held by another run."""


def resolve(workdir: str | os.PathLike) -> Path:
  """The absolute path of `workdir` (~ expanded); raises WorkdirError if it names a
  file or sits below one."""
  if workdir is None or not str(workdir).strip():
    raise WorkdirError('--workdir is empty; name a directory for checkpoints and metrics')
  try:
    path = Path(workdir).expanduser().absolute()
  except RuntimeError as e:  # ~user/... for a user that does not exist
    raise WorkdirError(f'--workdir={workdir} cannot be used: {e}') from None
  for candidate in (path, *path.parents):
    try:
      exists = candidate.exists()
    except OSError as e:  # e.g. a name longer than the file system allows
      raise WorkdirError(f'workdir {path} cannot be used: {e.strerror}') from None
    if not exists and candidate.is_symlink():  # mkdir would fail on it
      raise WorkdirError(f'workdir {path} cannot be used: {candidate} is a symbolic link to '
                         f'{os.readlink(candidate)}, which does not exist')
    if exists:
      if not candidate.is_dir():
        raise WorkdirError(f'workdir {path} cannot be used: {candidate} exists and is not a '
                           'directory')
      break
  return path


class RunLock:
  """An exclusive lock on `<workdir>/.lock-<process>`, held until `release()` or exit.

  `flock` locks belong to the open file, so the kernel drops them when the process
  ends for any reason (exit, exception, SIGKILL): a crashed run never leaves a stale
  lock. Each process of a multi-process run locks its own file, so all of them share
  one workdir while a second run started on it is refused.
  """

  def __init__(self, workdir: Path, process_index: int = 0):
    self.path = Path(workdir) / f'.lock-{process_index}'
    self._file = None

  def acquire(self) -> 'RunLock':
    try:
      handle = self.path.open('a+')
    except OSError as e:  # e.g. a directory of that name, or no write permission
      raise WorkdirError(f'cannot lock workdir {self.path.parent}: {self.path}: '
                         f'{e.strerror}') from None
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or 'another process'
      handle.close()
      raise WorkdirError(f'workdir {self.path.parent} is in use by a running training '
                         f'({holder}); wait for it to finish or use another --workdir') from None
    handle.seek(0)
    handle.truncate()
    handle.write(f'pid {os.getpid()}\n')
    handle.flush()
    self._file = handle
    return self

  def release(self) -> None:
    if self._file is not None:
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self) -> 'RunLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
