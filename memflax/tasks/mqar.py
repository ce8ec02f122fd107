"""Multi-query associative recall, MQAR (Arora et al. 2023, "Zoology: Measuring and
Improving Recall in Efficient Language Models", §3 and their `multiquery_ar` generator):
read K key-value token pairs, then answer queries for every key, in random order,
scattered through the rest of the sequence.

As in Zoology, keys are drawn without repeats from the lower half of the vocabulary
and values without repeats from the upper half; the pairs fill the first 2K tokens.
The remaining T − 2K positions offer (T − 2K)//2 query slots, one every second
position; each key is queried once, in the slot of gap g drawn without replacement
with probability ∝ (g+1)^(power_a − 1) (Zoology's power law, which favours short
gaps; sampled here with the Gumbel top-k trick). The model must output the key's
value *at the query token's position*. Every other position holds a uniformly
random token, as in Zoology, and is not scored.

Layout of one example (K = num_pairs, T = seq_length; the defaults give K = 8, T = 64):
  t = 2i, 2i+1          input: key_i, value_i                 (i = 0..K-1)
  t = 2K + 2·g_i        input: key_i; target: value_i (mask = 1)
  other t ≥ 2K          input: a random token (mask = 0)
inputs are one-hot [B, T, vocab_size] float32 (models read float vectors); targets
are token ids [B, T] int32. T stays seq_length whatever num_pairs a batch asks for,
so one compiled step serves every K with 4K ≤ T.

A mix of pair counts: with 1 ≤ min_pairs < num_pairs each example draws its own K
uniformly from min_pairs..num_pairs (Zoology trains on such a mix), laid out as
above for that K. `curriculum.kind = 'grow'` caps that draw at the curriculum's
level (memflax.curriculum), so training can start with few pairs and add more as
accuracy rises. min_pairs = 0 (the default) stores num_pairs in every example.

Loss: softmax cross-entropy over the masked positions, per sequence then over the
batch; metric: accuracy, the fraction of queries whose arg-max is the right value.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from memflax.tasks._bits import capped

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Task:
  vocab_size: int = 64
  num_pairs: int = 8
  seq_length: int = 64
  power_a: float = 0.01
  min_pairs: int = 0  # 0: num_pairs in every example; else K ~ U{min_pairs..num_pairs}

  # Class constants, not config fields (hence unannotated).
  primary_metric = 'accuracy'
  higher_is_better = True
  range_fields = ('min_pairs', 'num_pairs')
  curriculum_field = 'num_pairs'  # what a curriculum level caps
  size_name = 'pairs'  # what probe(size) varies, for tables and plots

  def probe(self, size: int) -> dict:
    """make_batch overrides for `size` key-value pairs stored (at most seq_length / 4)."""
    return dict(num_pairs=size)

  def __post_init__(self):
    _check_fits(self.vocab_size, self.num_pairs, self.seq_length, 'task.num_pairs')
    if (not isinstance(self.min_pairs, int) or isinstance(self.min_pairs, bool)
        or not 0 <= self.min_pairs <= self.num_pairs):
      raise ValueError(f'task.min_pairs must be an integer in 0..task.num_pairs '
                       f'({self.num_pairs}; 0 stores num_pairs in every example), got '
                       f'{self.min_pairs!r}')
    if not 0 < self.power_a <= 1:
      raise ValueError(f'task.power_a must be in (0, 1], got {self.power_a!r}')

  @property
  def input_size(self) -> int:
    return self.vocab_size

  @property
  def output_size(self) -> int:
    return self.vocab_size

  def make_batch(self, key: Array, batch_size: int, num_pairs: int | None = None,
                 min_pairs: int | None = None, level: Array | None = None) -> dict[str, Array]:
    """Returns inputs [B, T, vocab_size], targets [B, T] int32, mask [B, T], tokens
    [B, T] int32, keys, values, positions (of the queries) [B, K] and pairs [B] (the
    pairs each example stores), T = seq_length, K = num_pairs.

    `num_pairs` alone asks for exactly that many pairs per example (eval probes); the
    task's own range applies otherwise, capped at `level` (a traced curriculum cap)
    when given. In a mix, the unused rows of keys/values/positions (index ≥ pairs)
    hold positions = T: no token there.
    """
    hi = self.num_pairs if num_pairs is None else num_pairs
    if min_pairs is not None:
      lo = min_pairs
    elif num_pairs is not None:
      lo = hi
    else:  # a growing curriculum without a mix stores exactly `level` pairs everywhere
      lo = self.min_pairs or (None if level is not None else hi)
    _check_fits(self.vocab_size, hi, self.seq_length, 'num_pairs')
    if lo != hi or level is not None:
      return self._mixed_batch(key, batch_size, lo, hi, level)
    k = hi
    half = self.vocab_size // 2
    key_key, value_key, gap_key, filler_key = jax.random.split(key, 4)
    # The first K of a random permutation: K distinct tokens per example.
    keys = jnp.argsort(jax.random.uniform(key_key, (batch_size, half)), axis=1)[:, :k]
    values = half + jnp.argsort(
        jax.random.uniform(value_key, (batch_size, self.vocab_size - half)), axis=1)[:, :k]
    num_slots = (self.seq_length - 2 * k) // 2
    log_p = (self.power_a - 1) * jnp.log(jnp.arange(1, num_slots + 1, dtype=jnp.float32))
    # Top-k of log p + Gumbel noise = k draws without replacement with probabilities ∝ p.
    _, gaps = jax.lax.top_k(log_p + jax.random.gumbel(gap_key, (batch_size, num_slots)), k)
    positions = 2 * k + 2 * gaps

    rows = jnp.arange(batch_size)[:, None]
    tokens = jax.random.randint(filler_key, (batch_size, self.seq_length), 0, self.vocab_size)
    tokens = tokens.at[:, :2 * k].set(jnp.stack([keys, values], axis=-1).reshape(batch_size, -1))
    tokens = tokens.at[rows, positions].set(keys)
    targets = jnp.zeros_like(tokens).at[rows, positions].set(values)
    mask = jnp.zeros(tokens.shape, jnp.float32).at[rows, positions].set(1.0)
    return dict(inputs=jax.nn.one_hot(tokens, self.vocab_size, dtype=jnp.float32),
                targets=targets, mask=mask, tokens=tokens, keys=keys, values=values,
                positions=positions, pairs=jnp.full((batch_size,), k, jnp.int32))

  def _mixed_batch(self, key: Array, batch_size: int, lo: int | None, hi: int,
                   level: Array | None) -> dict[str, Array]:
    """make_batch with K_b ~ U{lo..min(hi, level)} per example (K_b = the capped level
    everywhere when lo is None); arrays sized for hi."""
    if lo is not None and not 1 <= lo <= hi:
      raise ValueError(f'min_pairs must be in 1..num_pairs ({hi}), got {lo}')
    half, length = self.vocab_size // 2, self.seq_length
    key_key, value_key, gap_key, filler_key, count_key = jax.random.split(key, 5)
    if lo is None:
      pairs = jnp.full((batch_size,), capped(1, hi, level), jnp.int32)
      lo = 1
    else:
      pairs = jax.random.randint(count_key, (batch_size,), lo, capped(lo, hi, level) + 1)
    keys = jnp.argsort(jax.random.uniform(key_key, (batch_size, half)), axis=1)[:, :hi]
    values = half + jnp.argsort(
        jax.random.uniform(value_key, (batch_size, self.vocab_size - half)), axis=1)[:, :hi]
    # Example b's query slots are g < (T − 2K_b)//2, at t = 2K_b + 2g; each of its K_b
    # keys takes one of the top K_b draws (at least K_b slots are open, as 4K_b ≤ T).
    slots = jnp.arange((length - 2 * lo) // 2)
    open_slot = slots[None, :] < ((length - 2 * pairs) // 2)[:, None]
    log_p = (self.power_a - 1) * jnp.log((slots + 1).astype(jnp.float32))
    scores = jnp.where(open_slot, log_p + jax.random.gumbel(gap_key, open_slot.shape), -jnp.inf)
    _, gaps = jax.lax.top_k(scores, hi)
    stored = jnp.arange(hi)[None, :] < pairs[:, None]
    positions = jnp.where(stored, 2 * pairs[:, None] + 2 * gaps, length)

    rows = jnp.arange(batch_size)[:, None]
    steps = jnp.arange(length)[None, :]
    prefix = jnp.stack([keys, values], axis=-1).reshape(batch_size, -1)
    prefix = jnp.pad(prefix, ((0, 0), (0, length - 2 * hi)))
    tokens = jax.random.randint(filler_key, (batch_size, length), 0, self.vocab_size)
    tokens = jnp.where(steps < 2 * pairs[:, None], prefix, tokens)
    tokens = tokens.at[rows, positions].set(keys, mode='drop')
    targets = jnp.zeros_like(tokens).at[rows, positions].set(values, mode='drop')
    mask = jnp.zeros(tokens.shape, jnp.float32).at[rows, positions].set(1.0, mode='drop')
    return dict(inputs=jax.nn.one_hot(tokens, self.vocab_size, dtype=jnp.float32),
                targets=targets, mask=mask, tokens=tokens, keys=keys, values=values,
                positions=positions, pairs=pairs)

  def loss_and_metrics(self, logits: Array, batch: dict[str, Array]) -> tuple[Array, dict]:
    """logits [B, T, vocab_size] -> (loss, {'loss', 'accuracy'}), batch means."""
    mask = batch['mask']
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets']) * mask
    queries = jnp.maximum(jnp.sum(mask, axis=1), 1.0)
    loss = jnp.mean(jnp.sum(per_token, axis=1) / queries)
    correct = (jnp.argmax(logits, axis=-1) == batch['targets']) * mask
    accuracy = jnp.mean(jnp.sum(correct, axis=1) / queries)
    return loss, {'loss': loss, 'accuracy': accuracy}


def _check_fits(vocab_size: int, num_pairs: int, seq_length: int, pairs_name: str) -> None:
  if 4 * num_pairs > seq_length:
    raise ValueError(f'task.seq_length ({seq_length}) must be at least 4·{pairs_name} = '
                     f'{4 * num_pairs}: 2 tokens per key-value pair, then a query slot every '
                     f'second position')
  if 2 * num_pairs > vocab_size:
    raise ValueError(f'task.vocab_size ({vocab_size}) must be at least 2·{pairs_name} = '
                     f'{2 * num_pairs}: keys and values are distinct tokens from its two halves')
