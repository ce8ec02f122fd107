"""The priority sort task's batches, loss and metric."""

import jax
import numpy as np
import pytest
from task_checks import (assert_batch_contract, assert_bce_scoring, assert_compiles_once,
                         assert_pure_function_of_key)

from memflax.tasks.priority_sort import Task

TASK = Task()  # the paper's setup: 20 eight-bit vectors in, the top 16 out


def test_hand_worked_example_sorts_three_vectors():
  task = Task(num_bits=2, num_inputs=3, num_outputs=2)
  batch = jax.device_get(task.make_batch(jax.random.PRNGKey(0), 1))
  x, y, m = batch['inputs'][0], batch['targets'][0], batch['mask'][0]
  assert x.shape == (6, 4) and y.shape == (6, 2)  # T = 3 + 1 + 2
  vectors, priority = x[:3, :2], x[:3, 2]
  first, second = np.argmax(priority), np.argsort(priority)[1]
  expected_x = np.zeros((6, 4), np.float32)
  expected_x[:3, :3] = np.concatenate([vectors, priority[:, None]], axis=1)
  expected_x[3, 3] = 1.0
  np.testing.assert_array_equal(x, expected_x)
  expected_y = np.zeros((6, 2), np.float32)
  expected_y[4], expected_y[5] = vectors[first], vectors[second]
  np.testing.assert_array_equal(y, expected_y)
  np.testing.assert_array_equal(m, [0, 0, 0, 0, 1, 1])


def test_targets_are_the_top_vectors_in_descending_priority():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(3), 64))
  assert_batch_contract(TASK, batch)
  x, y = batch['inputs'], batch['targets']
  assert x.shape == (64, 37, 10) and y.shape == (64, 37, 8)
  priority = x[:, :20, 8]
  np.testing.assert_array_equal(priority, batch['priorities'])
  assert priority.min() >= -1 and priority.max() <= 1 and priority.std() > 0.5
  order = np.argsort(-priority, axis=1, kind='stable')[:, :16]
  np.testing.assert_array_equal(batch['order'], order)
  np.testing.assert_array_equal(y[:, 21:], np.take_along_axis(x[:, :20, :8], order[..., None], 1))
  np.testing.assert_array_equal(y[:, :21], 0)
  np.testing.assert_array_equal(x[:, :, 9], np.broadcast_to(np.arange(37) == 20, (64, 37)))
  np.testing.assert_array_equal(x[:, 20:, :9], 0)
  np.testing.assert_array_equal(batch['mask'], np.broadcast_to(np.arange(37) > 20, (64, 37)))


def test_more_inputs_for_generalisation_probes_and_clear_errors():
  batch = TASK.make_batch(jax.random.PRNGKey(0), 4, num_inputs=30)
  assert batch['inputs'].shape == (4, 30 + 1 + 16, 10)
  with pytest.raises(ValueError, match=r'task.num_outputs \(21\) must be between 1 and '
                                       r'task.num_inputs \(20\)'):
    Task(num_outputs=21)
  with pytest.raises(ValueError, match='num_outputs'):
    TASK.make_batch(jax.random.PRNGKey(0), 4, num_inputs=10)


def test_no_reference_cost_beyond_zero():
  # The target is a function of the input: the optimal cost is 0, nothing to report.
  assert TASK.reference_cost(TASK.make_batch(jax.random.PRNGKey(0), 2)) is None


def test_batches_are_a_pure_function_of_the_key():
  assert_pure_function_of_key(TASK)


def test_jit_compiles_once():
  assert_compiles_once(TASK)


def test_loss_and_bit_errors_match_numpy():
  assert_bce_scoring(TASK, TASK.make_batch(jax.random.PRNGKey(1), 16))


def _hand_batch():
  # Three 2-bit vectors; priorities 0.9 and 0.8 are close, -0.5 is far below.
  bits = np.array([[[1, 0], [0, 0], [1, 1]]], np.float32)
  priorities = np.array([[0.9, 0.8, -0.5]], np.float32)
  inputs = np.zeros((1, 6, 4), np.float32)
  inputs[0, :3, :2], inputs[0, :3, 2], inputs[0, 3, 3] = bits[0], priorities[0], 1.0
  return dict(inputs=inputs, priorities=priorities, order=np.array([[0, 1]]))


@pytest.mark.parametrize('num_slots, expected', [
    (16, 0.0),  # slots 15, 14, 4: nothing shared, a perfect reader makes no error
    (2, 1.0),   # slots 1, 1, 0: vectors 0 and 1 superimposed as [½, 0]: half an error each
    (1, 1.0),   # one slot holds all three, mean [⅔, ⅓]: right for vector 0, bit 0 wrong for 1
])
def test_bucket_sort_errors_on_a_hand_worked_example(num_slots, expected):
  task = Task(num_bits=2, num_inputs=3, num_outputs=2)
  assert task.bucket_sort_bit_errors(_hand_batch(), num_slots) == expected


def test_bucket_sort_errors_match_a_loop_and_fall_with_the_memory_size():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(5), 50))
  p, order = batch['priorities'], batch['order']
  bits = batch['inputs'][:, :20, :8]
  total = 0.0
  for b in range(50):
    slot = [min(int((float(p[b, i]) + 1) / 2 * 128), 127) for i in range(20)]
    for i in order[b]:
      mean = np.mean([bits[b, j] for j in range(20) if slot[j] == slot[i]], axis=0)
      total += sum(0.5 if m == 0.5 else float((m > 0.5) != bits[b, i, k])
                   for k, m in enumerate(mean))
  assert TASK.bucket_sort_bit_errors(batch, 128) == pytest.approx(total / 50)
  floors = [TASK.bucket_sort_bit_errors(batch, n) for n in (16, 128, 1024, 2**20)]
  assert floors[0] > floors[1] > floors[2] > floors[3] and floors[3] < 0.1


def test_errors_by_priority_gap_on_a_hand_worked_example():
  # Priorities 0.9, 0.8 (0.1 apart) and -0.5: targets are vectors 0 then 1, both with
  # gap 0.1. Answer vector 0 right and vector 1 with both bits wrong: 1 error per vector.
  task = Task(num_bits=2, num_inputs=3, num_outputs=2)
  batch = _hand_batch()
  batch['targets'] = np.zeros((1, 6, 2), np.float32)
  batch['targets'][0, 4:] = [[1, 0], [0, 0]]
  logits = np.full((1, 6, 2), -1.0, np.float32)
  logits[0, 4] = [1.0, -1.0]   # vector 0: right
  logits[0, 5] = [1.0, 1.0]    # vector 1 is [0, 0]: both bits wrong
  rows = task.errors_by_priority_gap(batch, logits, edges=(0.05, 0.2))
  assert [(r['gap_from'], r['gap_to']) for r in rows] == [(0.0, 0.05), (0.05, 0.2),
                                                          (0.2, None)]
  assert rows[0]['fraction'] == 0 and rows[0]['bit_errors_per_vector'] is None
  assert rows[1]['fraction'] == 1 and rows[1]['bit_errors_per_vector'] == 1.0


def test_errors_by_priority_gap_against_a_loop():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(6), 40))
  logits = np.asarray(jax.random.normal(jax.random.PRNGKey(7), batch['targets'].shape))
  rows = TASK.errors_by_priority_gap(batch, logits)
  per_gap = {}
  for b in range(40):
    p = [float(v) for v in batch['priorities'][b]]
    for j, i in enumerate(batch['order'][b]):
      gap = min(abs(p[i] - p[k]) for k in range(20) if k != i)
      wrong = int(((logits[b, 21 + j] > 0) != (batch['targets'][b, 21 + j] > 0.5)).sum())
      row = next(r for r in rows if r['gap_from'] <= gap
                 and (r['gap_to'] is None or gap < r['gap_to']))
      per_gap.setdefault(row['gap_from'], []).append(wrong)
  for r in rows:
    got = per_gap.get(r['gap_from'], [])
    assert r['fraction'] == pytest.approx(len(got) / (40 * 16))
    if got:
      assert r['bit_errors_per_vector'] == pytest.approx(np.mean(got))
  total = sum(r['fraction'] * (r['bit_errors_per_vector'] or 0) for r in rows)
  _, metrics = TASK.loss_and_metrics(logits, batch)
  assert total * 16 == pytest.approx(float(metrics['bit_errors_per_seq']), rel=1e-5)


def _one_hot_steps(slots, num_slots, heads=1):
  """Weightings [1, T, heads, num_slots] with step t's weight on slots[t] (None: flat)."""
  w = np.full((1, len(slots), heads, num_slots), 1 / num_slots, np.float32)
  for t, slot in enumerate(slots):
    if slot is not None:
      w[0, t, 0] = 0.02 / num_slots
      w[0, t, 0, slot] = 0.98
  return w


@pytest.mark.parametrize('reads, expected', [
    ([5, 2], 1.0),   # vector 0 (priority 0.9) went to slot 5, vector 1 (0.8) to slot 2
    ([5, 7], 0.5),   # the second output reads vector 2's slot
    ([2, 5], 0.0),   # both read, in the wrong order
])
def test_target_slot_read_fraction_on_a_hand_worked_example(reads, expected):
  task = Task(num_bits=2, num_inputs=3, num_outputs=2)
  writes = _one_hot_steps([5, 2, 7, None, None, None], 8)
  read = _one_hot_steps([None, None, None, None, *reads], 8, heads=2)
  read[0, :, 1] = np.eye(8)[0]  # a second read head is not scored
  assert task.target_slot_read_fraction(_hand_batch(), read, writes) == expected


def test_target_slot_read_fraction_of_ideal_readers():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(8), 16))
  n, m, t = TASK.num_inputs, TASK.num_outputs, batch['inputs'].shape[1]
  eye = np.eye(128, dtype=np.float32)
  # Writes to slots 3, 4, ..., then reads in priority order: a sort by content read.
  writes = np.zeros((16, t, 1, 128), np.float32)
  writes[:, :n, 0] = eye[np.arange(n) + 3]
  reads = np.zeros((16, t, 1, 128), np.float32)
  reads[:, n + 1:, 0] = eye[batch['order'] + 3]
  assert TASK.target_slot_read_fraction(batch, reads, writes) == 1.0
  # Reading the written slots in input order instead finds a target only by chance.
  reads[:, n + 1:, 0] = eye[np.arange(m) + 3]
  chance = float((batch['order'] == np.arange(m)).mean())
  assert TASK.target_slot_read_fraction(batch, reads, writes) == pytest.approx(chance)
  assert chance < 0.2


@pytest.mark.parametrize('slots, by_priority, by_arrival, distinct', [
    ([7, 5, 2], 1.0, -1.0, 3),                # by priority (0.9, 0.8, -0.5): a bucket sort
    ([2, 3, 4], -1.0, 1.0, 3),                # in arrival order
    ([5, 5, 2], 1.5 / np.sqrt(3), -1.5 / np.sqrt(3), 2),  # a tie: slot ranks 2.5, 2.5, 1
])
def test_write_slot_order_on_hand_worked_examples(slots, by_priority, by_arrival, distinct):
  task = Task(num_bits=2, num_inputs=3, num_outputs=2)
  order = task.write_slot_order(_hand_batch(), _one_hot_steps([*slots, None, None, None], 8))
  assert order['by_priority'] == pytest.approx(by_priority)
  assert order['by_arrival'] == pytest.approx(by_arrival)
  assert order['distinct_slots'] == distinct


def test_write_slot_order_leaves_out_sequences_written_to_one_slot():
  task = Task(num_bits=2, num_inputs=3, num_outputs=2)
  batch = _hand_batch()
  batch = {k: np.concatenate([v, v]) for k, v in batch.items()}
  writes = np.concatenate([_one_hot_steps([4, 4, 4, None, None, None], 8),
                           _one_hot_steps([2, 3, 4, None, None, None], 8)])
  order = task.write_slot_order(batch, writes)
  assert order['by_arrival'] == pytest.approx(1.0)  # the second sequence's alone
  assert order['distinct_slots'] == 2.0             # (1 + 3) / 2


def test_write_slot_order_against_the_textbook_formula():
  # Distinct slots and priorities: ρ = 1 - 6 Σ d² / (n (n² - 1)) per sequence.
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(9), 12))
  n = TASK.num_inputs
  slots = np.stack([np.random.default_rng(b).permutation(128)[:n] for b in range(12)])
  writes = np.zeros((12, n + 1 + TASK.num_outputs, 1, 128), np.float32)
  writes[:, :n, 0] = np.eye(128, dtype=np.float32)[slots]
  rank = lambda v: np.argsort(np.argsort(v)) + 1
  rho = lambda a, b: 1 - 6 * ((rank(a) - rank(b)) ** 2).sum() / (n * (n * n - 1))
  order = TASK.write_slot_order(batch, writes)
  assert order['by_priority'] == pytest.approx(
      np.mean([rho(slots[b], batch['priorities'][b]) for b in range(12)]))
  assert order['by_arrival'] == pytest.approx(
      np.mean([rho(slots[b], np.arange(n)) for b in range(12)]))
  assert order['distinct_slots'] == n
