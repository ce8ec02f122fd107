"""Regularisers of continual learning as pure functions of parameter pytrees.

Notation: θ the parameters being trained on task t (0-based), θ_i the parameters of
snapshot i (after task i), i < t. Past tasks are weighted as in the seeds' snapshot-
isolation objective, α̃_i = α_i γ^{(t-1)-i}: the most recent snapshot has weight α_{t-1},
each older one a further factor γ (γ = 1: all alike).

  l2 (snapshot coupling):  λ Σ_i α̃_i ‖θ − θ_i‖²                          (seeds §4.3)
  ewc (offline):           (λ/2) Σ_i α̃_i Σ_k F_i[k] (θ[k] − θ_i[k])²      (Kirkpatrick 2017)
  ewc (online):            (λ/2) Σ_k F*[k] (θ[k] − θ_{t-1}[k])²,
                           F* ← γ F*_old + F_{t-1}                         (Schwarz 2018)

F_i is the diagonal Fisher of task i at θ_i, `fisher_diagonal`: the mean over a sample
of N task-i sequences of the squared gradient of the per-sequence loss ℓ_s (the quantity
whose batch mean is the training loss: binary cross-entropy averaged over the
sequence's target bits). "empirical" uses the data's targets; "exact" takes the
expectation over the model's own predictive distribution, E_{y~p_θ(·|x)}[(∇ℓ(x, y))²],
estimated with `num_samples` label draws per sequence (Bernoulli per output bit,
categorical per token), an unbiased estimate of the closed form
Σ_k σ_k(1−σ_k)(∂z_k/∂θ)²/n_s² that tests/test_continual_strategies.py checks it against.
Per-example gradients are `vmap(grad)` over chunks of the sample (`lax.map`), so memory
stays that of one chunk.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

STRATEGIES = ('naive', 'l2', 'ewc', 'replay')
FISHER_KINDS = ('empirical', 'exact')
EWC_MODES = ('offline', 'online')

PyTree = Any


def past_weights(num_past: int, gamma: float, alphas: Sequence[float] | None = None) -> np.ndarray:
  """α̃_i = α_i γ^{(num_past-1)-i} for past tasks i = 0..num_past-1 -> float64 [num_past]."""
  alphas = np.ones(num_past) if alphas is None else np.asarray(alphas, np.float64)
  if alphas.shape != (num_past,):
    raise ValueError(f'need {num_past} alphas, got {alphas.shape}')
  return alphas * float(gamma) ** (num_past - 1 - np.arange(num_past))


def _sq_dist(params: PyTree, anchor: PyTree, scale: PyTree | None = None) -> jax.Array:
  """Σ_k s[k] (θ[k] − a[k])² over every leaf (s = 1 when scale is None)."""
  if scale is None:
    terms = jax.tree.map(lambda p, a: jnp.sum(jnp.square(p - a)), params, anchor)
  else:
    terms = jax.tree.map(lambda p, a, f: jnp.sum(f * jnp.square(p - a)), params, anchor, scale)
  return sum(jax.tree.leaves(terms), jnp.zeros((), jnp.float32))


def l2_penalty(params: PyTree, anchors: Sequence[PyTree], weights: Sequence[float],
               lam: float) -> jax.Array:
  """Snapshot coupling λ Σ_i w_i ‖θ − θ_i‖² -> scalar."""
  total = jnp.zeros((), jnp.float32)
  for anchor, w in zip(anchors, weights, strict=True):
    total = total + w * _sq_dist(params, anchor)
  return lam * total


def ewc_penalty(params: PyTree, anchors: Sequence[PyTree], fishers: Sequence[PyTree],
                weights: Sequence[float], lam: float) -> jax.Array:
  """(λ/2) Σ_i w_i Σ_k F_i[k](θ[k] − θ_i[k])² -> scalar. Online EWC is the one-term case
  (anchor θ_{t-1}, Fisher from `online_fisher`, weight 1)."""
  total = jnp.zeros((), jnp.float32)
  for anchor, fisher, w in zip(anchors, fishers, weights, strict=True):
    total = total + w * _sq_dist(params, anchor, fisher)
  return 0.5 * lam * total


def online_fisher(fishers: Sequence[PyTree], gamma: float) -> PyTree:
  """F* after tasks 0..n-1: F* ← γ F*_old + F_i, starting from F*_{-1} = 0."""
  total = None
  for f in fishers:
    total = f if total is None else jax.tree.map(lambda old, new: gamma * old + new, total, f)
  return total


def fisher_diagonal(example_loss: Callable, params: PyTree, examples: dict, *,
                    kind: str = 'empirical', key: jax.Array | None = None,
                    sample_targets: Callable | None = None, num_samples: int = 1,
                    chunk_size: int = 32) -> PyTree:
  """Diagonal Fisher, a pytree like params.

  example_loss(params, example) -> scalar loss ℓ of one example (a dict of arrays without
  the batch axis). examples: dict of arrays [N, ...], N a multiple of chunk_size.
  kind='exact' needs key and sample_targets(params, example, key) -> example with
  'targets' replaced by a draw from the model's predictive distribution.
  Returns (1/(N·S)) Σ_s Σ_draws (∇ℓ_s)², S = num_samples (1 for 'empirical').
  """
  if kind not in FISHER_KINDS:
    raise ValueError(f'Fisher kind must be one of {FISHER_KINDS}, got {kind!r}')
  n = jax.tree.leaves(examples)[0].shape[0]
  if n % chunk_size:
    raise ValueError(f'{n} examples do not split into chunks of {chunk_size}')
  chunks = jax.tree.map(lambda x: x.reshape(n // chunk_size, chunk_size, *x.shape[1:]), examples)
  per_example_grad = jax.vmap(jax.grad(example_loss), in_axes=(None, 0))
  draws = 1 if kind == 'empirical' else num_samples

  def chunk_sum(args):
    index, chunk = args
    if kind == 'empirical':
      return jax.tree.map(lambda g: jnp.sum(jnp.square(g), axis=0),
                          per_example_grad(params, chunk))

    def one_draw(s, total):  # a loop, not unrolled: num_samples may be large
      keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, index), s), chunk_size)
      drawn = jax.vmap(sample_targets, in_axes=(None, 0, 0))(params, chunk, keys)
      grads = per_example_grad(params, drawn)
      return jax.tree.map(lambda t, g: t + jnp.sum(jnp.square(g), axis=0), total, grads)

    return jax.lax.fori_loop(0, draws, one_draw, jax.tree.map(jnp.zeros_like, params))

  sums = jax.lax.map(chunk_sum, (jnp.arange(n // chunk_size), chunks))
  return jax.tree.map(lambda s: jnp.sum(s, axis=0) / (n * draws), sums)
