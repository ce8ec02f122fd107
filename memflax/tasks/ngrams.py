"""The dynamic N-grams task (Graves et al. 2014, "Neural Turing Machines", §4.4):
predict the next bit of a sequence drawn from an N-gram model that is new for every
sequence, so the model must learn the table's statistics within one sequence.

As in the paper, each sequence gets its own table of 2^(n−1) (32 for n = 6)
probabilities drawn from Beta(½, ½), one per context of n−1 previous bits, and
200 bits: the first n−1 uniform, each later bit 1 with the probability its context
indexes. The paper measures cost in bits per sequence against the Bayes-optimal
predictor, which counts what followed each context so far (N0 zeros, N1 ones) and
predicts P(next = 1) = (N1 + ½)/(N0 + N1 + 1); `bayes_optimal_cost` computes its cost.

Layout of one example of L = seq_length bits b_0..b_{L-1} (T = L = 200):
  input  at t: b_t                                  [B, T, 1]
  target at t: b_{t+1} (0 at t = L−1)               [B, T, 1]
  mask   at t: 1 for n−2 ≤ t ≤ L−2
The mask keeps exactly the bits with a full (n−1)-bit context, b_{n-1}..b_{L-1}
(L−n+1 = 195 predictions at the defaults): the first n−1 bits are fair coin flips
that no predictor can do better than 1 bit on, so they only add a constant.

Loss: binary cross-entropy in bits, averaged over each sequence's predictions and
then over the batch (same scale as the other tasks' per-bit losses); metric:
cost_bits_per_seq, the summed cross-entropy in bits per sequence (the paper's unit).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Task:
  n: int = 6
  seq_length: int = 200

  # Class constants, not config fields (hence unannotated).
  primary_metric = 'cost_bits_per_seq'
  higher_is_better = False
  range_fields = ('seq_length',)
  size_name = 'length'  # what probe(size) varies, for tables and plots

  @property
  def smallest_size(self) -> int:
    return self.n + 1  # one scored bit after a full context

  def probe(self, size: int) -> dict:
    """make_batch overrides for sequences of `size` bits."""
    return dict(seq_length=size)

  def __post_init__(self):
    if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 2:
      raise ValueError(f'task.n must be an integer >= 2, got {self.n!r}')
    _check_length(self.seq_length, self.n, 'task.seq_length')

  @property
  def input_size(self) -> int:
    return 1

  @property
  def output_size(self) -> int:
    return 1

  def make_batch(self, key: Array, batch_size: int,
                 seq_length: int | None = None) -> dict[str, Array]:
    """Returns inputs, targets [B, T, 1], mask [B, T], bits [B, T] int32 and the
    per-sequence tables probs [B, 2^(n-1)], with T = seq_length."""
    length = self.seq_length if seq_length is None else seq_length
    _check_length(length, self.n, 'seq_length')
    num_contexts = 2 ** (self.n - 1)
    table_key, bits_key = jax.random.split(key)
    probs = jax.random.beta(table_key, 0.5, 0.5, (batch_size, num_contexts))
    uniforms = jax.random.uniform(bits_key, (length, batch_size))

    def step(context, xs):
      # `context` holds the last n−1 bits as an integer, the most recent bit lowest.
      t, u = xs
      p = jnp.take_along_axis(probs, context[:, None], axis=1)[:, 0]
      bit = (u < jnp.where(t < self.n - 1, 0.5, p)).astype(jnp.int32)
      return (2 * context + bit) % num_contexts, bit

    context = jnp.zeros((batch_size,), jnp.int32)
    _, bits = jax.lax.scan(step, context, (jnp.arange(length), uniforms))
    bits = bits.T
    steps = jnp.arange(length)
    mask = (steps >= self.n - 2) & (steps <= length - 2)
    return dict(inputs=bits[..., None].astype(jnp.float32),
                targets=jnp.pad(bits[:, 1:], ((0, 0), (0, 1)))[..., None].astype(jnp.float32),
                mask=jnp.broadcast_to(mask, (batch_size, length)).astype(jnp.float32),
                bits=bits, probs=probs)

  def loss_and_metrics(self, logits: Array, batch: dict[str, Array]) -> tuple[Array, dict]:
    """logits [B, T, 1] -> (loss, {'loss', 'cost_bits_per_seq'}), batch means."""
    mask = batch['mask']
    nats = optax.sigmoid_binary_cross_entropy(logits[..., 0], batch['targets'][..., 0]) * mask
    cost = jnp.sum(nats, axis=1) / jnp.log(2.0)
    loss = jnp.mean(cost / jnp.maximum(jnp.sum(mask, axis=1), 1.0))
    return loss, {'loss': loss, 'cost_bits_per_seq': jnp.mean(cost)}

  def bayes_optimal_cost(self, batch: dict[str, Array]) -> float:
    """The Bayes-optimal predictor's cost in bits per sequence, averaged over the batch.

    Over the same predictions the mask scores: bit j ≥ n−1 costs −log2 P(b_j) with
    P(b_j = 1) = (N1 + ½)/(N0 + N1 + 1), N0/N1 counting zeros/ones that followed
    b_j's context before j. Numpy on the host, vectorised over batch and time.
    """
    bits = np.asarray(batch['inputs'])[..., 0].astype(np.int64)
    k = self.n - 1
    length = bits.shape[1]
    # Context of b_j (j ≥ k): b_{j-1-i} is bit i of the index, as in make_batch.
    context = sum(bits[:, k - 1 - i:length - 1 - i] << i for i in range(k))
    predicted = bits[:, k:]
    onehot = (context[..., None] == np.arange(2**k)).astype(np.int64)   # [B, P, C]
    ones = onehot * predicted[..., None]
    # Counts strictly before each position, read off at that position's context.
    seen = np.take_along_axis(np.cumsum(onehot, 1) - onehot, context[..., None], 2)[..., 0]
    seen_ones = np.take_along_axis(np.cumsum(ones, 1) - ones, context[..., None], 2)[..., 0]
    p_one = (seen_ones + 0.5) / (seen + 1.0)
    p = np.where(predicted == 1, p_one, 1.0 - p_one)
    return float(np.mean(-np.sum(np.log2(p), axis=1)))

  def reference_cost(self, batch: dict[str, Array]) -> float:
    """The best achievable cost_bits_per_seq on `batch` (the Bayes-optimal cost)."""
    return self.bayes_optimal_cost(batch)


def _check_length(length: int, n: int, name: str) -> None:
  # At least one bit with a full context to predict.
  if not length >= n:
    raise ValueError(f'{name} ({length}) must be at least task.n ({n})')
