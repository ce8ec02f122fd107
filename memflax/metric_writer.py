"""Metrics as JSON lines in the workdir (one object per row, always with `step`).

A run that resumes from step S first moves the rows past S (written by the
attempt that died after its last checkpoint) to `metrics_superseded.jsonl`, so
`metrics.jsonl` reads as one uninterrupted run and nothing written is lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np


class MetricWriter:
  """Appends rows to `<workdir>/metrics.jsonl`; only process 0 writes."""

  SUPERSEDED = 'metrics_superseded.jsonl'

  def __init__(self, workdir: str | Path, filename: str = 'metrics.jsonl'):
    self.path = Path(workdir) / filename
    self._active = jax.process_index() == 0

  def discard_after(self, step: int) -> int:
    """Moves rows with `step` > step to metrics_superseded.jsonl; returns how many moved."""
    if not self._active or not self.path.exists():
      return 0
    lines = [line for line in self.path.read_text().splitlines() if line.strip()]
    keep, moved = [], []
    for line in lines:
      try:
        later = json.loads(line)['step'] > step
      except (ValueError, KeyError, TypeError):
        later = True  # a row cut short by a kill mid-write
      (moved if later else keep).append(line)
    if moved:
      with (self.path.parent / self.SUPERSEDED).open('a') as f:
        f.write(''.join(line + '\n' for line in moved))
      tmp = self.path.with_suffix('.jsonl.tmp')
      tmp.write_text(''.join(line + '\n' for line in keep))
      os.replace(tmp, self.path)  # atomic: a kill leaves the old or the new file, never half
    return len(moved)

  def write(self, step: int, **values) -> None:
    if not self._active:
      return
    row = {'step': int(step)}
    for key, value in values.items():
      row[key] = float(value) if isinstance(value, (np.floating, np.ndarray, float)) else value
    with self.path.open('a') as f:
      f.write(json.dumps(row) + '\n')

  def read(self) -> list[dict]:
    if not self.path.exists():
      return []
    return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
