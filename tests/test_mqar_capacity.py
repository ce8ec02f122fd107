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
