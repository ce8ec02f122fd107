"""Tasks, one per file, each exporting a frozen dataclass `Task`; selected by `config.task.name`.

A `Task` knows its `input_size` and `output_size`, makes batches as a pure
function of a PRNG key (`make_batch(key, batch_size) -> dict` with at least
inputs [B,T,D_in], targets and mask [B,T]) and scores logits
(`loss_and_metrics(logits, batch) -> (loss, metrics)`, both means over the batch).
"""

from __future__ import annotations

import importlib
import pkgutil


def available() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith('_'))


def build(task_config):
  """Instantiates `config.task` (its fields other than `name` become Task fields)."""
  if task_config.name not in available():
    raise ValueError(f'unknown task.name {task_config.name!r}; choose one of {available()}')
  kwargs = {k: v for k, v in dict(task_config).items() if k != 'name'}
  return importlib.import_module(f'{__name__}.{task_config.name}').Task(**kwargs)
