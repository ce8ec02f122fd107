"""Any snapshot on any task of its sequence (eval.py --workdir=DIR --snapshot=...).

The model, tasks and interface come from the config stored in the snapshot, so a
snapshot is evaluated exactly as the run measured its row of R: the same held-out
sequences per task (eval.num_sequences of them unless overridden).
"""

from __future__ import annotations

from pathlib import Path

import ml_collections

from memflax import workdir as workdir_lib
from memflax.config_defaults import harness_config
from memflax.continual import snapshots
from memflax.continual.runner import Sequence


def evaluate_snapshot(workdir: str | Path, which: str, num_sequences: int | None = None,
                      only: list[str] | None = None) -> tuple[str, dict]:
  """(snapshot name, {task key: metrics}) for snapshot `which` (index, name or path) of
  `workdir`, on every task of its sequence or the keys in `only`. Raises
  SnapshotNotFoundError / IncompatibleSnapshotError / ConfigError (one line)."""
  workdir = workdir_lib.resolve(workdir)
  path = snapshots.resolve(workdir, which)
  meta = snapshots.read_meta(path)
  config = ml_collections.ConfigDict(meta['config'])
  for key, value in harness_config().items():  # fields added to the harness since it was written
    if key not in config:
      config[key] = value
  if num_sequences is not None:
    config.eval.num_sequences = num_sequences
  seq = Sequence(config)
  if only:
    unknown = sorted(set(only) - set(seq.keys))
    if unknown:
      raise snapshots.SnapshotNotFoundError(
          f'--tasks names {unknown}, not tasks of this sequence ({", ".join(seq.keys)})')
  params = snapshots.restore_params(path, seq.abstract_params())
  results = {seq.keys[j]: seq.evaluate(params, j) for j in range(len(seq))
             if not only or seq.keys[j] in only}
  return path.name, results
