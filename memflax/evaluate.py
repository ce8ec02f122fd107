"""Evaluation of a trained run: restore its newest checkpoint, probe length generalisation.

Usable from Python (`restore(workdir)`, `length_generalisation(...)`) and from
eval.py. The model, task and seed come from the config stored in the checkpoint,
so evaluation needs only the workdir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from memflax import config_defaults, progress_log, tracing
from memflax import workdir as workdir_lib
from memflax.data.bits import bigram_bits_per_byte, bigram_counts
from memflax.data.document_stream import DocumentLanes
from memflax.checkpoint import Checkpointer, stored_config
from memflax.train import Trainer

# Held-out sequences come from their own key stream, never used in training.
_EVAL_STREAM = 7919


class NoCheckpointError(FileNotFoundError):
  """The workdir holds no readable checkpoint."""


def restore(workdir: str | Path) -> tuple[Trainer, Any, int]:
  """(trainer built from the stored config, params, step) of the newest good checkpoint."""
  workdir = workdir_lib.resolve(workdir)
  stored = stored_config(workdir)
  if stored is None:
    if (Path(workdir) / 'snapshots').is_dir():  # a continual-learning run keeps no top-level steps
      raise NoCheckpointError(f'{workdir} holds a task sequence (continual learning); evaluate '
                              'one of its snapshots with --snapshot=<index or name>')
    raise NoCheckpointError(f'no checkpoint in {Path(workdir) / "checkpoints"}; '
                            'train first with train.py --workdir=' + str(workdir))
  trainer = Trainer(config_defaults.complete(stored))
  checkpointer = Checkpointer(workdir, keep=stored.get('keep_checkpoints', 3))
  try:
    restored = checkpointer.restore_newest(trainer.abstract_state())
  finally:
    checkpointer.close()
  if restored is None:
    raise NoCheckpointError(f'no readable checkpoint in {Path(workdir) / "checkpoints"}')
  state, step, _ = restored
  return trainer, state.params, step


def length_generalisation(trainer: Trainer, params, lengths, num_sequences: int,
                          progress: bool = False) -> dict:
  """{str(size): {metrics..., 'num_sequences'}} at each size of the task's size axis
  (`task.probe(size)`: sequence length for copy, items stored for associative recall,
  key-value pairs for MQAR, ...), beyond the training range included. progress: a bar over
  the sizes on a terminal (each compiles its own program)."""
  root = jax.random.fold_in(jax.random.PRNGKey(trainer.config.seed), _EVAL_STREAM)
  results = {}
  for size in progress_log.bar(lengths, len(lengths), trainer.task.size_name, progress):
    step = trainer.make_eval_step(num_sequences, jax.random.fold_in(root, size),
                                  **trainer.task.probe(size))
    metrics = jax.device_get(step(params))
    results[str(size)] = {k: float(v) for k, v in metrics.items()}
    results[str(size)]['num_sequences'] = int(num_sequences)
  return results


def profile_sizes(largest: int, points: int = 8, smallest: int = 1) -> list[int]:
  """Up to `points` distinct sizes from `smallest` to `largest`, evenly spread."""
  return sorted({int(round(x)) for x in np.linspace(smallest, largest, points)})


def memory_profile(trainer: Trainer, params, largest: int, num_sequences: int,
                   points: int = 8, progress: bool = False) -> dict:
  """The task's headline metric against its size axis, from the smallest size to `largest`:
  {'size_name', 'metric', 'higher_is_better', 'sizes': [...], 'values': [...]}."""
  task = trainer.task
  sizes = profile_sizes(largest, points, getattr(task, 'smallest_size', 1))
  rows = length_generalisation(trainer, params, sizes, num_sequences, progress)
  return dict(size_name=task.size_name, metric=task.primary_metric,
              higher_is_better=task.higher_is_better, sizes=[int(n) for n in rows],
              values=[rows[n][task.primary_metric] for n in rows])


def trace_one(trainer: Trainer, params, length: int, seed: int = 0) -> dict[str, np.ndarray]:
  """One example of size `length` with everything the model can show (tracing.make_tracer):
  inputs, targets, mask, outputs [T, ...], weightings [T, heads, N], memory [T, N, W]."""
  return tracing.make_tracer(trainer, length, seed)(params)


def language_model_eval(trainer: Trainer, params, max_windows: int | None = None) -> dict:
  """Validation bits per byte of a byte-level LM and of the add-one bigram model fitted on
  the same training split, on the same windows (all of them, or the first max_windows):
  {'val_bits_per_byte', 'bigram_bits_per_byte', 'val_accuracy', 'num_windows'}."""
  corpus, seq_len = trainer.data, trainer.task.seq_length
  model = trainer.validation_metrics(params, max_windows)
  # The same bytes the model was scored on: all windows or the first max_windows, or for
  # document lanes the same documents' segments.
  if trainer.streams:
    lanes = DocumentLanes(corpus, 'validation', seq_len)
    windows = lanes.scored_windows(trainer.config.batch_size, lanes.documents_for(max_windows),
                                  trainer.task.eval_piece_segments)
  else:
    windows = (corpus.validation_batches(1024, seq_len) if max_windows is None else
               corpus.validation_batches(1, seq_len, max_batches=max_windows))
  bigram = bigram_bits_per_byte(bigram_counts(corpus.chunks('train')), windows)
  return dict(val_bits_per_byte=float(model['bits_per_byte']), bigram_bits_per_byte=bigram,
              val_accuracy=float(model['accuracy']), num_windows=int(model['num_windows']))
