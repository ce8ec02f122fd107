"""Tasks, one per file, each exporting a frozen dataclass `Task`; selected by `config.task.name`.

A `Task` knows its `input_size` and `output_size`, makes batches as a pure
function of a PRNG key (`make_batch(key, batch_size) -> dict` with at least
inputs [B,T,D_in], targets and mask [B,T]) and scores logits
(`loss_and_metrics(logits, batch) -> (loss, metrics)`, both means over the batch).
"""

from __future__ import annotations

import importlib
import pkgutil

from memflax import extensions


def available() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith('_'))


def build(task_config):
  """Instantiates `config.task` (its fields other than `name` become Task fields). The name
  is a module of this package or a dotted path to a module of the user's exporting `Task`
  (memflax.extensions)."""
  name = task_config.name
  kwargs = {k: v for k, v in dict(task_config).items() if k != 'name'}
  if extensions.is_external(name):
    return extensions.load(name, 'Task', 'task')(**kwargs)
  if name not in available():
    raise ValueError(f'unknown task.name {name!r}; choose one of {available()} or a dotted '
                     'path to your own module (my_tasks.my_task)')
  return importlib.import_module(f'{__name__}.{name}').Task(**kwargs)
