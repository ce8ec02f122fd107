"""Short causal depthwise convolution over time, with a carried history for step decoding.

  y_t = Σ_{j=0}^{K−1} w_j ⊙ x_{t−K+1+j}          w [K, C], x_t [C]; x_s = 0 for s < 0

w_{K−1} weighs the current step. The last K − 1 inputs (the history, [B, K−1, C]) are all a
later call needs to continue the sequence, so feeding a sequence in pieces (e.g. one step
at a time) gives exactly what one call over the whole sequence gives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def empty_history(batch_size: int, kernel_size: int, channels: int, dtype=jnp.float32) -> Array:
  """The history before the first step: zeros [B, K−1, C]."""
  return jnp.zeros((batch_size, kernel_size - 1, channels), dtype)


def causal_depthwise_conv(x: Array, kernel: Array, history: Array | None = None):
  """x [B, T, C], kernel [K, C], history [B, K−1, C] (None: zeros) -> (y [B, T, C],
  history after the last step [B, K−1, C])."""
  size = kernel.shape[0]
  if history is None:
    history = empty_history(x.shape[0], size, x.shape[-1], x.dtype)
  window = jnp.concatenate([history.astype(x.dtype), x], axis=1)  # [B, K−1+T, C]
  length = x.shape[1]
  # K is a handful of taps, so summing K shifted views beats a general convolution.
  y = sum(kernel[j] * window[:, j:j + length] for j in range(size))
  return y, window[:, window.shape[1] - (size - 1):]
