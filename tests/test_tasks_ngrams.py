"""The dynamic N-grams task: generator, loss in bits, and the Bayes-optimal cost checked
against a brute-force posterior computed independently."""

import math

import jax
import numpy as np
import pytest
from task_checks import assert_batch_contract, assert_compiles_once, assert_pure_function_of_key

from memflax.tasks.ngrams import Task

TASK = Task()  # the paper's setup: 6-grams, 200 bits


def predictive_by_quadrature(ones: int, zeros: int, grid: int = 2000) -> float:
  """P(next = 1 | ones, zeros) under a Beta(½, ½) prior, integrated numerically.

  θ = sin²φ turns the prior into the uniform density 2/π on φ ∈ (0, π/2), so the
  integrands are smooth and the midpoint rule converges fast.
  """
  phi = (np.arange(grid) + 0.5) * (np.pi / 2) / grid
  theta = np.sin(phi)**2
  likelihood = theta**ones * (1 - theta)**zeros
  return float(np.sum(theta * likelihood) / np.sum(likelihood))


def brute_force(bits: np.ndarray, n: int):
  """Per sequence: the Bayes-optimal cost in bits and P(b_j = 1) for j ≥ n−1 (loop over
  time, contexts as tuples, posteriors by quadrature)."""
  costs, p_one = [], np.full(bits.shape, np.nan)
  for b, seq in enumerate(bits.tolist()):
    counts, cost = {}, 0.0
    for j in range(n - 1, len(seq)):
      context = tuple(seq[j - n + 1:j])
      ones, zeros = counts.get(context, (0, 0))
      p_one[b, j] = predictive_by_quadrature(ones, zeros)
      cost -= math.log2(p_one[b, j] if seq[j] else 1 - p_one[b, j])
      counts[context] = (ones + seq[j], zeros + 1 - seq[j])
    costs.append(cost)
  return np.array(costs), p_one


def log_beta(a: float, b: float) -> float:
  return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def marginal_likelihood_cost(seq: list, n: int) -> float:
  """−log2 P(b_{n-1}..b_{L-1} | first n−1 bits) = −Σ_contexts log2 B(N1+½, N0+½)/B(½, ½):
  the sequential Bayes cost telescopes to this by the chain rule."""
  counts = {}
  for j in range(n - 1, len(seq)):
    context = tuple(seq[j - n + 1:j])
    ones, zeros = counts.get(context, (0, 0))
    counts[context] = (ones + seq[j], zeros + 1 - seq[j])
  nats = sum(log_beta(n1 + .5, n0 + .5) - log_beta(.5, .5) for n1, n0 in counts.values())
  return -nats / math.log(2)


def as_batch(bits) -> dict:
  return {'inputs': np.asarray(bits, np.float32)[..., None]}


def test_hand_worked_bayes_cost_for_a_bigram():
  # n = 2, bits 0 1 1 0 1: predict b1..b4 from the previous bit.
  #   b1 = 1 after context 0, nothing seen:        P = ½        → 1 bit
  #   b2 = 1 after context 1, nothing seen:        P = ½        → 1 bit
  #   b3 = 0 after context 1, seen one 1: P(1) = 1.5/2 = ¾      → log2 4 = 2 bits
  #   b4 = 1 after context 0, seen one 1: P(1) = ¾              → log2 4/3 bits
  cost = Task(n=2, seq_length=5).bayes_optimal_cost(as_batch([[0, 1, 1, 0, 1]]))
  np.testing.assert_allclose(cost, 4 + math.log2(4 / 3), rtol=1e-12)


@pytest.mark.parametrize('n', [2, 3])
def test_bayes_cost_matches_brute_force_posterior(n):
  task = Task(n=n, seq_length=14)
  bits = np.asarray(task.make_batch(jax.random.PRNGKey(n), 6)['bits'])
  costs, _ = brute_force(bits, n)
  np.testing.assert_allclose(task.bayes_optimal_cost(as_batch(bits)), costs.mean(), rtol=1e-9)
  np.testing.assert_allclose(costs, [marginal_likelihood_cost(s, n) for s in bits.tolist()],
                             rtol=1e-9)
  # Averaging is over sequences: the batch of one sequence gives that sequence's cost.
  np.testing.assert_allclose(task.bayes_optimal_cost(as_batch(bits[:1])), costs[0], rtol=1e-9)


def test_the_bayes_predictor_scored_by_the_task_costs_what_bayes_optimal_cost_says():
  task = Task(n=3, seq_length=30)
  batch = jax.device_get(task.make_batch(jax.random.PRNGKey(7), 8))
  _, p_one = brute_force(batch['bits'], 3)
  # The prediction of b_j (j = 2..29) is made at step j − 1; other steps are unscored.
  logits = np.zeros(batch['targets'].shape, np.float32)
  logits[:, 1:29, 0] = np.log(p_one[:, 2:] / (1 - p_one[:, 2:]))
  _, metrics = task.loss_and_metrics(logits, batch)
  np.testing.assert_allclose(metrics['cost_bits_per_seq'], task.bayes_optimal_cost(batch),
                             rtol=1e-5)


def test_bayes_predictor_beats_a_fair_coin_on_long_sequences():
  task = Task(seq_length=1000)
  batch = task.make_batch(jax.random.PRNGKey(0), 16)
  coin = 1000 - 5  # one bit per prediction
  assert task.bayes_optimal_cost(batch) < 0.85 * coin
  assert TASK.bayes_optimal_cost(TASK.make_batch(jax.random.PRNGKey(1), 64)) < 195
  assert TASK.reference_cost(batch) == TASK.bayes_optimal_cost(batch)


def test_layout_inputs_are_the_bits_and_targets_the_next_bit():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(3), 8))
  assert_batch_contract(TASK, batch)
  bits = batch['bits']
  assert bits.shape == (8, 200) and batch['probs'].shape == (8, 32)
  np.testing.assert_array_equal(batch['inputs'][..., 0], bits)
  np.testing.assert_array_equal(batch['targets'][:, :-1, 0], bits[:, 1:])
  np.testing.assert_array_equal(batch['targets'][:, -1], 0)
  # Scored: the predictions of b_5..b_199, made at steps 4..198.
  np.testing.assert_array_equal(batch['mask'], np.broadcast_to(
      (np.arange(200) >= 4) & (np.arange(200) <= 198), (8, 200)))


def test_bits_follow_their_sequence_table():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(4), 1000))
  bits, probs = batch['bits'].astype(np.int64), batch['probs']
  # Beta(½, ½): mean ½, variance 1/8.
  np.testing.assert_allclose([probs.mean(), probs.var()], [0.5, 0.125], atol=3e-3)
  np.testing.assert_allclose(bits[:, :5].mean(), 0.5, atol=0.02)  # the free first n−1 bits
  # Context of b_j: b_{j-1} is bit 0 of the index, b_{j-5} bit 4 (the documented order).
  context = sum(bits[:, 4 - i:199 - i] << i for i in range(5))
  p = np.take_along_axis(probs, context, axis=1)
  for lo, hi in [(0, .1), (.1, .4), (.4, .6), (.6, .9), (.9, 1)]:
    chosen = (p >= lo) & (p < hi)
    np.testing.assert_allclose(bits[:, 5:][chosen].mean(), p[chosen].mean(), atol=0.01)


def test_loss_is_bits_per_prediction_and_cost_bits_per_sequence():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(1), 16))
  loss, metrics = TASK.loss_and_metrics(np.zeros((16, 200, 1), np.float32), batch)
  np.testing.assert_allclose([loss, metrics['cost_bits_per_seq']], [1.0, 195.0], rtol=1e-6)
  logits = np.random.default_rng(0).normal(size=(16, 200, 1)) * 2
  p = 1 / (1 + np.exp(-logits[..., 0]))
  y, m = batch['targets'][..., 0], batch['mask']
  bits_cost = (-(y * np.log2(p) + (1 - y) * np.log2(1 - p)) * m).sum(1)
  loss, metrics = TASK.loss_and_metrics(logits.astype(np.float32), batch)
  np.testing.assert_allclose(metrics['cost_bits_per_seq'], bits_cost.mean(), rtol=1e-5)
  np.testing.assert_allclose(loss, (bits_cost / 195).mean(), rtol=1e-5)
  assert metrics['loss'] == loss


def test_bad_sizes_are_one_clear_error():
  with pytest.raises(ValueError, match='task.n must be an integer >= 2'):
    Task(n=1)
  with pytest.raises(ValueError, match=r'task.seq_length \(5\) must be at least task.n \(6\)'):
    Task(seq_length=5)
  with pytest.raises(ValueError, match='seq_length'):
    TASK.make_batch(jax.random.PRNGKey(0), 2, seq_length=3)


def test_longer_sequences_for_generalisation_probes():
  batch = TASK.make_batch(jax.random.PRNGKey(0), 2, seq_length=500)
  assert batch['inputs'].shape == (2, 500, 1)
  np.testing.assert_array_equal(batch['mask'].sum(1), 495)


def test_batches_are_a_pure_function_of_the_key():
  assert_pure_function_of_key(TASK)


def test_jit_compiles_once():
  assert_compiles_once(TASK)
