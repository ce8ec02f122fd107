"""Evaluation of a trained run: restore its newest checkpoint, probe length generalisation.

Usable from Python (`restore(workdir)`, `length_generalisation(...)`) and from
eval.py. The model, task and seed come from the config stored in the checkpoint,
so evaluation needs only the workdir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from memflax import workdir as workdir_lib
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
    raise NoCheckpointError(f'no checkpoint in {Path(workdir) / "checkpoints"}; '
                            'train first with train.py --workdir=' + str(workdir))
  trainer = Trainer(ml_collections.ConfigDict(stored))
  checkpointer = Checkpointer(workdir, keep=stored.get('keep_checkpoints', 3))
  try:
    restored = checkpointer.restore_newest(trainer.abstract_state())
  finally:
    checkpointer.close()
  if restored is None:
    raise NoCheckpointError(f'no readable checkpoint in {Path(workdir) / "checkpoints"}')
  state, step, _ = restored
  return trainer, state.params, step


def length_generalisation(trainer: Trainer, params, lengths, num_sequences: int) -> dict:
  """{str(length): {'bit_errors_per_seq', 'loss', 'num_sequences'}} on sequences of exactly
  each length (the copy task is trained on lengths ≤ task.max_length)."""
  root = jax.random.fold_in(jax.random.PRNGKey(trainer.config.seed), _EVAL_STREAM)
  results = {}
  for length in lengths:
    step = trainer.make_eval_step(num_sequences, jax.random.fold_in(root, length),
                                  min_length=length, max_length=length)
    metrics = jax.device_get(step(params))
    results[str(length)] = {k: float(v) for k, v in metrics.items()}
    results[str(length)]['num_sequences'] = int(num_sequences)
  return results


def trace_one(trainer: Trainer, params, length: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Runs one sequence of `length`; returns inputs, targets, mask, outputs (σ(logits))
  [T, ...] and the model's traces (e.g. read/write weightings [T, heads, N])."""
  batch = trainer.task.make_batch(jax.random.PRNGKey(seed), 1, min_length=length,
                                  max_length=length)
  logits, traces = jax.jit(trainer.model.apply)({'params': params}, batch['inputs'])
  out = {k: np.asarray(v[0]) for k, v in batch.items() if k != 'lengths'}
  out['outputs'] = np.asarray(jax.nn.sigmoid(logits[0]))
  out.update({k: np.asarray(v[0]) for k, v in traces.items()})
  return out
