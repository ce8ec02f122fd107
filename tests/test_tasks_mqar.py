"""Multi-query associative recall (Zoology): token layout, query gaps, loss and accuracy."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from task_checks import assert_batch_contract, assert_compiles_once, assert_pure_function_of_key

from memflax import tasks
from memflax.tasks.mqar import Task

TASK = Task()  # vocab 64, 8 pairs, 64 tokens


def test_hand_worked_example_with_two_pairs():
  task = Task(vocab_size=8, num_pairs=2, seq_length=8)
  batch = jax.device_get(task.make_batch(jax.random.PRNGKey(0), 1))
  tokens, y, m = batch['tokens'][0], batch['targets'][0], batch['mask'][0]
  (k0, k1), (v0, v1) = batch['keys'][0], batch['values'][0]
  assert {k0, k1} <= {0, 1, 2, 3} and k0 != k1 and {v0, v1} <= {4, 5, 6, 7} and v0 != v1
  np.testing.assert_array_equal(tokens[:4], [k0, v0, k1, v1])
  # Two query slots, at t = 4 and t = 6, one per key; both are filled.
  np.testing.assert_array_equal(sorted(tokens[[4, 6]]), sorted([k0, k1]))
  np.testing.assert_array_equal(m, [0, 0, 0, 0, 1, 0, 1, 0])
  answer = {k0: v0, k1: v1}
  np.testing.assert_array_equal(y, [0, 0, 0, 0, answer[tokens[4]], 0, answer[tokens[6]], 0])
  np.testing.assert_array_equal(batch['inputs'][0], np.eye(8, dtype=np.float32)[tokens])


def test_answers_are_the_values_paired_with_the_queried_keys():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(3), 128))
  assert_batch_contract(TASK, batch)
  assert batch['inputs'].shape == (128, 64, 64) and batch['targets'].dtype == np.int32
  np.testing.assert_array_equal(batch['inputs'], np.eye(64, dtype=np.float32)[batch['tokens']])
  in_context_order = 0
  for b in range(128):
    tokens, y, m = batch['tokens'][b], batch['targets'][b], batch['mask'][b]
    keys, values = tokens[0:16:2], tokens[1:16:2]
    assert len(set(keys)) == 8 and len(set(values)) == 8
    assert keys.max() < 32 and values.min() >= 32      # keys and values from separate halves
    asked = np.flatnonzero(m)
    assert len(asked) == 8 and asked.min() >= 16 and np.all((asked - 16) % 2 == 0)
    assert sorted(tokens[asked]) == sorted(keys)         # every key queried once
    pairs = dict(zip(keys, values))
    np.testing.assert_array_equal(y[asked], [pairs[k] for k in tokens[asked]])
    np.testing.assert_array_equal(y[m == 0], 0)
    in_context_order += list(tokens[asked]) == list(keys)
  assert in_context_order < 3  # queries come in random order


def test_query_gaps_follow_zoologys_power_law():
  # With one pair the single query's gap g has probability ∝ (g+1)^(a−1) over the 31 slots.
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(4), 20000, num_pairs=1))
  gaps = (batch['positions'][:, 0] - 2) // 2
  p = np.arange(1, 32, dtype=np.float64)**(0.01 - 1)
  p /= p.sum()
  np.testing.assert_allclose(np.bincount(gaps, minlength=31) / 20000, p, atol=0.006)


def test_fewer_or_more_pairs_keep_the_sequence_length():
  for k in (1, 4, 16):
    batch = TASK.make_batch(jax.random.PRNGKey(k), 4, num_pairs=k)
    assert batch['inputs'].shape == (4, 64, 64)
    np.testing.assert_array_equal(batch['mask'].sum(1), k)
  with pytest.raises(ValueError, match=r'task.seq_length \(64\) must be at least 4·num_pairs'):
    TASK.make_batch(jax.random.PRNGKey(0), 4, num_pairs=17)


def _assert_layout(tokens, y, m, positions, k, length):
  """One example stores k pairs in tokens[:2k] and queries each key once after them."""
  keys, values = tokens[0:2 * k:2], tokens[1:2 * k:2]
  assert len(set(keys)) == k and len(set(values)) == k
  asked = np.flatnonzero(m)
  assert len(asked) == k and asked.min() >= 2 * k and np.all((asked - 2 * k) % 2 == 0)
  np.testing.assert_array_equal(np.sort(positions[:k]), asked)
  assert np.all(positions[k:] == length)  # rows of pairs not stored point past the end
  assert sorted(tokens[asked]) == sorted(keys)
  pairs = dict(zip(keys, values))
  np.testing.assert_array_equal(y[asked], [pairs[key] for key in tokens[asked]])
  np.testing.assert_array_equal(y[m == 0], 0)


def test_a_mix_draws_each_examples_pairs_and_lays_each_out_as_alone():
  task = Task(num_pairs=16, min_pairs=3)
  batch = jax.device_get(task.make_batch(jax.random.PRNGKey(5), 3000))
  assert_batch_contract(task, batch)
  assert batch['inputs'].shape == (3000, 64, 64) and batch['positions'].shape == (3000, 16)
  counts = np.bincount(batch['pairs'], minlength=17)
  assert counts[:3].sum() == 0 and counts[3:].min() > 3000 / 14 * 0.7  # U{3..16}
  np.testing.assert_array_equal(batch['mask'].sum(1), batch['pairs'])
  for b in range(200):
    _assert_layout(batch['tokens'][b], batch['targets'][b], batch['mask'][b],
                   batch['positions'][b], batch['pairs'][b], 64)
  # Each K has its own query slots: the last key of a K = 16 example can sit at t = 62.
  assert batch['positions'][batch['pairs'] == 3].min() == 6
  assert batch['positions'][batch['pairs'] == 16].max(initial=0) <= 62


def test_a_curriculum_level_caps_the_pairs():
  key = jax.random.PRNGKey(6)
  mixed = Task(num_pairs=16, min_pairs=2)
  batch = jax.device_get(mixed.make_batch(key, 500, level=jnp.int32(5)))
  assert set(batch['pairs']) == {2, 3, 4, 5}
  assert batch['inputs'].shape == (500, 64, 64)
  # Without a mix, a level is the number of pairs in every example, at most num_pairs.
  exact = Task(num_pairs=16)
  for level, stored in ((1, 1), (7, 7), (40, 16)):
    batch = jax.device_get(exact.make_batch(key, 50, level=jnp.int32(level)))
    np.testing.assert_array_equal(batch['pairs'], stored)
    for b in range(5):
      _assert_layout(batch['tokens'][b], batch['targets'][b], batch['mask'][b],
                     batch['positions'][b], stored, 64)
  # An explicit num_pairs (an eval probe) is exact whatever the task's own mix.
  probe = jax.device_get(mixed.make_batch(key, 50, **mixed.probe(9)))
  np.testing.assert_array_equal(probe['pairs'], 9)
  assert probe['positions'].shape == (50, 9)


def test_a_mixed_batch_is_pure_and_compiles_once():
  task = Task(num_pairs=16, min_pairs=1)
  assert_pure_function_of_key(task)
  assert_compiles_once(task)


def test_too_short_or_too_small_is_one_clear_error():
  with pytest.raises(ValueError, match=r'task.seq_length \(30\) must be at least '
                                       r'4·task.num_pairs = 32'):
    Task(seq_length=30)
  with pytest.raises(ValueError, match=r'task.vocab_size \(10\) must be at least'):
    Task(vocab_size=10)
  with pytest.raises(ValueError, match='task.power_a'):
    Task(power_a=0.0)
  for bad in (-1, 9, 2.5, True):
    with pytest.raises(ValueError, match=r'task.min_pairs must be an integer in 0..task.'
                                         r'num_pairs \(8; 0 stores num_pairs'):
      Task(min_pairs=bad)


def test_builds_by_name_with_defaults():
  task = tasks.build(ml_collections.ConfigDict({'name': 'mqar'}))
  assert task == TASK and task.input_size == task.output_size == 64
  assert (task.primary_metric, task.higher_is_better, task.range_fields) == \
      ('accuracy', True, ('min_pairs', 'num_pairs'))


def test_loss_and_accuracy_match_numpy():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(1), 16))
  logits = np.random.default_rng(0).normal(size=(16, 64, 64)).astype(np.float32) * 3
  # Make some answers right so accuracy is neither 0 nor 1.
  rows, cols = np.nonzero(batch['mask'][:, :40])
  logits[rows, cols, batch['targets'][rows, cols]] += 20
  loss, metrics = TASK.loss_and_metrics(logits, batch)
  z = logits.astype(np.float64)
  log_p = z - z.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_p, batch['targets'][..., None], -1)[..., 0]
  m = batch['mask']
  np.testing.assert_allclose(loss, ((nll * m).sum(1) / m.sum(1)).mean(), rtol=1e-5)
  right = (z.argmax(-1) == batch['targets']) * m
  accuracy = (right.sum(1) / m.sum(1)).mean()
  assert 0.2 < accuracy < 0.9
  np.testing.assert_allclose(metrics['accuracy'], accuracy, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss'], loss)


def test_perfect_logits_score_accuracy_one():
  batch = TASK.make_batch(jax.random.PRNGKey(2), 8)
  loss, metrics = TASK.loss_and_metrics(jax.nn.one_hot(batch['targets'], 64) * 30.0, batch)
  assert float(metrics['accuracy']) == 1.0 and float(loss) < 1e-6


def test_batches_are_a_pure_function_of_the_key():
  assert_pure_function_of_key(TASK)


def test_jit_compiles_once():
  assert_compiles_once(TASK)
