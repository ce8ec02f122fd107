"""One example run through a model with everything it can show: inputs, targets, outputs,
head weightings and memory contents over time. Used for the PNGs of eval.py, the
TensorBoard images of a training run and the notebooks."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np


def make_tracer(trainer, size: int | None = None, seed: int = 0) -> Callable[..., dict[str, np.ndarray]]:
  """params -> trace of one fixed example of size `size` (the task's probe axis: length,
  items, pairs; None: drawn from the training distribution). Compiled once, so a training loop can call it at every evaluation.

  The trace holds inputs, targets, mask, outputs (probabilities in the layout of targets:
  σ for bits, softmax over tokens) [T, ...], the model's traces (e.g. read/write
  weightings [T, heads, N]) and, for models that keep one, the memory after each step
  ('memory' [T, N, W]).
  """
  overrides = trainer.task.probe(size) if size is not None else {}
  batch = trainer.task.make_batch(jax.random.PRNGKey(seed), 1, **overrides)
  batch = jax.device_get(batch)
  # Memory is sown into 'intermediates' only when asked for, so the training step never
  # stacks it; here it is.
  apply = jax.jit(functools.partial(trainer.model.apply, mutable=['intermediates']))

  def trace(params) -> dict[str, np.ndarray]:
    (logits, traces), kept = apply({'params': params}, batch['inputs'])
    logits, traces, kept = jax.device_get((logits, traces, kept))
    out = {k: np.asarray(batch[k][0]) for k in ('inputs', 'targets', 'mask')}
    if out['targets'].ndim == logits.ndim - 2:  # token ids: show them one-hot beside softmax
      out['targets'] = np.eye(logits.shape[-1], dtype=np.float32)[out['targets']]
      out['outputs'] = np.asarray(jax.nn.softmax(logits[0]))
    else:
      out['outputs'] = np.asarray(jax.nn.sigmoid(logits[0]))
    out.update({k: np.asarray(v[0]) for k, v in traces.items()})
    memories = [v for path, v in jax.tree_util.tree_leaves_with_path(kept)
                if any(getattr(k, 'key', None) == 'memory' for k in path)]
    if memories:
      out['memory'] = np.asarray(memories[0][0])  # sown as a 1-tuple of [B, T, N, W]
    return out

  return trace
