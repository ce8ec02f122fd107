"""The copy task's batches, loss and metric, checked element by element."""

import jax
import numpy as np

from memflax.tasks.copy import Task

TASK = Task(num_bits=8, min_length=1, max_length=20)


def test_layout_echoes_the_sequence_after_the_delimiter():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(3), 64))
  assert batch['inputs'].shape == (64, 41, 9) and batch['targets'].shape == (64, 41, 8)
  assert set(np.unique(batch['lengths'])) <= set(range(1, 21))
  assert len(np.unique(batch['lengths'])) > 5  # lengths vary within a batch
  for b in range(64):
    n = batch['lengths'][b]
    x, y, m = batch['inputs'][b], batch['targets'][b], batch['mask'][b]
    np.testing.assert_array_equal(x[n], [0] * 8 + [1])                 # delimiter
    np.testing.assert_array_equal(x[:n, 8], 0)
    np.testing.assert_array_equal(x[n + 1:], 0)                        # silent while answering
    np.testing.assert_array_equal(y[n + 1:2 * n + 1], x[:n, :8])       # the echo
    np.testing.assert_array_equal(m, (np.arange(41) > n) & (np.arange(41) <= 2 * n))
    np.testing.assert_array_equal(y[m == 0], 0)


def test_batches_are_a_pure_function_of_the_key():
  a = TASK.make_batch(jax.random.PRNGKey(5), 8)
  b = TASK.make_batch(jax.random.PRNGKey(5), 8)
  c = TASK.make_batch(jax.random.PRNGKey(6), 8)
  np.testing.assert_array_equal(a['inputs'], b['inputs'])
  assert not np.array_equal(a['inputs'], c['inputs'])


def test_fixed_length_batches_for_generalisation_probes():
  batch = TASK.make_batch(jax.random.PRNGKey(0), 4, min_length=80, max_length=80)
  assert batch['inputs'].shape == (4, 161, 9)
  np.testing.assert_array_equal(batch['lengths'], 80)
  np.testing.assert_array_equal(batch['mask'].sum(1), 80)


def test_loss_and_bit_errors_match_numpy():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(1), 16))
  logits = np.random.default_rng(0).normal(size=batch['targets'].shape).astype(np.float32) * 3
  loss, metrics = TASK.loss_and_metrics(logits, batch)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  y, m = batch['targets'], batch['mask'][..., None]
  bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)) * m
  per_seq = bce.sum((1, 2)) / (batch['lengths'] * 8)
  np.testing.assert_allclose(loss, per_seq.mean(), rtol=1e-5)
  errors = (np.abs((p > 0.5) - y) * m).sum((1, 2)).mean()
  np.testing.assert_allclose(metrics['bit_errors_per_seq'], errors, rtol=1e-6)


def test_perfect_logits_score_zero_errors():
  batch = TASK.make_batch(jax.random.PRNGKey(2), 8)
  logits = (batch['targets'] * 2 - 1) * 30.0
  loss, metrics = TASK.loss_and_metrics(logits, batch)
  assert float(metrics['bit_errors_per_seq']) == 0.0 and float(loss) < 1e-6
