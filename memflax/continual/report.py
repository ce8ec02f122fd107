"""continual.json and the accuracy-matrix heatmap, from the rows stored in the snapshots.

continual.json keys: strategy, tasks (snapshot names), metric (what R holds), R ([T+1][T]:
row 0 before training, row i+1 after task i; memflax.continual.metrics), ACC, BWT, FWT,
forgetting, plus R_<primary metric> (the same matrix in each task's own headline metric,
e.g. bit errors per sequence) and train_time_s per task.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from memflax import viz
from memflax.continual import metrics, snapshots

ACCURACY_DEFINITION = ('per-bit accuracy 1 - bit_errors/bits per held-out sequence, averaged '
                       'over sequences (bit tasks); next-byte accuracy (byte LM)')


def summarise(seq, workdir: Path) -> dict:
  metas = [snapshots.read_meta(snapshots.snapshot_root(workdir) / seq.name(i))
           for i in range(len(seq))]
  rows = [metas[0]['initial_row']] + [m['row'] for m in metas]
  r = np.array([[cell['accuracy'] for cell in row] for row in rows])
  out = dict(strategy=metas[-1]['strategy'], tasks=[seq.name(i) for i in range(len(seq))],
             metric=ACCURACY_DEFINITION, **metrics.summary(r))
  primaries = sorted({t.primary_metric for t in seq.tasks})
  for name in primaries:
    out[f'R_{name}'] = [[cell.get(name) for cell in row] for row in rows]
  out['train_time_s'] = [m.get('train_time_s') for m in metas]
  out['init_from'] = metas[0].get('init_from')
  return out


def write(result: dict, workdir: Path) -> tuple[Path, Path]:
  """Writes continual.json (atomically: a temporary file renamed) and continual_R.png."""
  path = workdir / 'continual.json'
  tmp = path.with_suffix('.json.tmp')
  tmp.write_text(json.dumps(result, indent=2) + '\n')
  tmp.replace(path)
  png = workdir / 'continual_R.png'
  viz.plot_accuracy_matrix(result, png)
  return path, png


