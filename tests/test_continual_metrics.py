"""Forgetting metrics and the padded interface on hand-made inputs (exact values)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax.continual import metrics
from memflax.continual.padded import PaddedTask, bit_accuracy, interface_widths
from memflax.tasks import associative_recall, copy, repeat_copy

# Row 0: before training (b); row i+1: after task i. A[0, 1] = 0.95 > A[1, 1]: the
# model did better on task 1 *before* learning it, which only the RWalk max (over every
# snapshot but the last) counts.
R = [[0.10, 0.20, 0.30],
     [0.90, 0.95, 0.20],
     [0.70, 0.80, 0.50],
     [0.60, 0.50, 0.90]]


def test_acc_is_the_mean_of_the_last_row():
  assert metrics.acc(R) == pytest.approx((0.6 + 0.5 + 0.9) / 3, abs=1e-12)


def test_bwt_compares_final_with_just_learned():
  # ((0.6 - 0.9) + (0.5 - 0.8)) / 2
  assert metrics.bwt(R) == pytest.approx(-0.3, abs=1e-12)


def test_fwt_compares_before_learning_with_initial():
  # ((A[0,1] - b1) + (A[1,2] - b2)) / 2 = ((0.95 - 0.2) + (0.5 - 0.3)) / 2
  assert metrics.fwt(R) == pytest.approx(0.475, abs=1e-12)


def test_forgetting_takes_the_best_earlier_accuracy():
  # task 0: max(0.9, 0.7) - 0.6 = 0.3; task 1: max(0.95, 0.8) - 0.5 = 0.45
  assert metrics.forgetting(R) == pytest.approx(0.375, abs=1e-12)
  # forgetting >= -BWT always; here they differ because of A[0, 1].
  assert metrics.forgetting(R) > -metrics.bwt(R)


def test_single_task_and_bad_shapes():
  one = [[0.2], [0.7]]
  assert metrics.summary(one) == dict(R=one, ACC=0.7, BWT=0.0, FWT=0.0, forgetting=0.0)
  with pytest.raises(ValueError, match=r'\[T\+1, T\]'):
    metrics.acc([[0.1, 0.2], [0.3, 0.4]])


def test_bit_accuracy_per_sequence_then_mean():
  # Two sequences, T = 3, D = 2. Seq 0 scores steps 0 and 1 (4 bits), one wrong;
  # seq 1 scores step 1 only (2 bits), both wrong: mean(1 - 1/4, 1 - 2/2) = 0.375.
  logits = jnp.array([[[1., -1.], [1., 1.], [5., 5.]],
                      [[1., 1.], [-1., 1.], [1., 1.]]])
  targets = jnp.array([[[1., 0.], [1., 0.], [0., 0.]],
                       [[0., 0.], [1., 0.], [0., 0.]]])
  mask = jnp.array([[1., 1., 0.], [0., 1., 0.]])
  assert float(bit_accuracy(logits, targets, mask)) == pytest.approx(0.375, abs=1e-7)


def test_padded_interface_pads_inputs_and_slices_logits():
  tasks = [copy.Task(num_bits=8, max_length=4), repeat_copy.Task(max_length=3, max_repeats=2),
           associative_recall.Task(max_items=3)]
  widths = interface_widths(tasks)
  assert widths == (10, 9)  # repeat copy's 8 bits + delimiter + count → 8 bits + end marker
  raw = tasks[2]
  padded = PaddedTask(raw, *widths)
  key = jax.random.PRNGKey(3)
  batch, want = padded.make_batch(key, 4), raw.make_batch(key, 4)
  assert batch['inputs'].shape == want['inputs'].shape[:2] + (10,)
  np.testing.assert_array_equal(batch['inputs'][..., :8], want['inputs'])
  assert not np.any(batch['inputs'][..., 8:])
  logits = jax.random.normal(jax.random.PRNGKey(4), batch['inputs'].shape[:2] + (9,))
  loss, m = padded.loss_and_metrics(logits, batch)
  raw_loss, raw_m = raw.loss_and_metrics(logits[..., :6], want)
  assert float(loss) == float(raw_loss)
  assert float(m['bit_errors_per_seq']) == float(raw_m['bit_errors_per_seq'])
  # Channels 6..8 belong to other tasks: task 2's loss sends them no gradient.
  grad = jax.grad(lambda z: padded.loss_and_metrics(z, batch)[0])(logits)
  assert not np.any(grad[..., 6:]) and np.any(grad[..., :6])
  assert padded.primary_metric == 'bit_errors_per_seq' and padded.output_size == 9
  with pytest.raises(ValueError, match='does not fit'):
    PaddedTask(tasks[1], 8, 9)
