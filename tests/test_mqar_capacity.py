"""benchmarks/mqar_capacity.py --per-query: accuracy split by which pair was asked and by
the query's place, from a real (short) training run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
import mqar_capacity  # noqa: E402


def test_per_query_accuracy_splits_the_same_queries_two_ways():
  row = mqar_capacity.run('transformer', 4, 30, 0, per_query=True)
  by_pair, by_order = (np.array(row['per_query'][k]) for k in ('by_pair', 'by_query_order'))
  assert by_pair.shape == by_order.shape == (4,)
  assert ((0 <= by_pair) & (by_pair <= 1)).all()
  # Every query is counted once in each split: the means agree (to the rounding).
  np.testing.assert_allclose(by_pair.mean(), by_order.mean(), atol=2e-3)
  assert row['seq_length'] == 16 and 0 <= row['accuracy'] <= 1


def test_split_by_query_on_a_hand_worked_example():
  # Sequence 0 answers pair 0, asked last (position 10); sequence 1 answers pair 2, also
  # asked last: right by pair half the time for pairs 0 and 2, always for the last query.
  correct = np.array([[True, False, False], [False, False, True]])
  positions = np.array([[10, 6, 8], [6, 8, 10]])
  split = mqar_capacity.split_by_query(correct, positions)
  assert split == dict(by_pair=[0.5, 0.0, 0.5], by_query_order=[0.0, 0.0, 1.0])


def test_overrides_reach_the_config_and_a_mixed_run_is_scored_at_its_pairs():
  config = mqar_capacity.config_for('transformer', 8, 10, 0,
                                    ['model.positions=rotary', 'task.min_pairs=2',
                                     'learning_rate=1e-3'])
  assert (config.model.positions, config.task.min_pairs, config.learning_rate) == \
      ('rotary', 2, 1e-3)
  assert (config.task.num_pairs, config.task.seq_length) == (8, 32)
  row = mqar_capacity.run('transformer', 4, 30, 0, overrides=['task.min_pairs=1'])
  assert row['overrides'] == ['task.min_pairs=1']
  # Scored on sequences of exactly 4 pairs, apart from the accuracy on its own mix of 1..4.
  assert 0 <= row['accuracy'] <= 1 and 0 <= row['accuracy_on_mix'] <= 1
  assert row['accuracy'] != row['accuracy_on_mix']
