"""Metrics as JSON lines in the workdir (one object per row, always with `step`)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np


class MetricWriter:
  """Appends rows to `<workdir>/metrics.jsonl`; only process 0 writes."""

  def __init__(self, workdir: str | Path, filename: str = 'metrics.jsonl'):
    self.path = Path(workdir) / filename
    self._active = jax.process_index() == 0

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
