"""Bits per byte: the model metric, and an add-one bigram baseline to compare it with.

A model that has learnt nothing scores 8 bits per byte (uniform over 256 values); the
bigram baseline is the first bar worth beating.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np


def bits_per_byte(logits: jax.Array, targets: jax.Array,
                  mask: jax.Array | None = None) -> jax.Array:
  """Mean cross-entropy in bits: logits [..., 256], targets [...] ints, mask [...] -> [].

  mask (optional) weighs each target; the mean is over the weights.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  if mask is None:
    return nll.mean() / math.log(2)
  mask = mask.astype(jnp.float32)
  return (nll * mask).sum() / mask.sum() / math.log(2)


def bigram_counts(chunks: Iterable[np.ndarray]) -> np.ndarray:
  """Counts of (previous, next) byte pairs in one stream given as consecutive pieces.

  chunks: uint8 [n_i] pieces of the stream (e.g. ByteCorpus.chunks('train')) ->
  int64 [256, 256], counts[a, b] = number of times byte b follows byte a.
  """
  counts = np.zeros(256 * 256, np.int64)
  previous = np.zeros(0, np.uint8)  # last byte of the previous piece pairs with the next
  for chunk in chunks:
    data = np.concatenate([previous, np.asarray(chunk, np.uint8)]).astype(np.int64)
    if len(data) > 1:
      counts += np.bincount(data[:-1] * 256 + data[1:], minlength=256 * 256)
    previous = np.asarray(chunk[-1:], np.uint8) if len(chunk) else previous
  return counts.reshape(256, 256)


def bigram_bits_per_byte(counts: np.ndarray, windows: np.ndarray | Iterable[np.ndarray]) -> float:
  """Bits per byte of the add-one-smoothed bigram model of `counts` on windows.

  counts: int [256, 256] from bigram_counts on the train split.
  windows: uint8 [N, T+1] or an iterable of such batches (e.g.
    ByteCorpus.validation_batches); as for a model, w[:, 1:] are the targets and each is
    predicted from the byte before it, so the figure compares with bits_per_byte.
  """
  counts = np.asarray(counts, np.float64)
  log2_probs = np.log2(counts + 1) - np.log2(counts.sum(1, keepdims=True) + 256)
  if isinstance(windows, np.ndarray):
    windows = [windows]
  total, n = 0.0, 0
  for w in windows:
    w = np.asarray(w, np.int64)
    total -= log2_probs[w[:, :-1], w[:, 1:]].sum()
    n += w[:, 1:].size
  if n == 0:
    raise ValueError('bigram_bits_per_byte needs at least one target byte')
  return total / n
