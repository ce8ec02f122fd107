"""Length buckets: the ranges, the per-step choice, and that training draws each size
exactly as often as without buckets."""

import collections

import jax
import numpy as np
import pytest

from memflax import config_checks, length_buckets, tasks
from memflax.config_presets import compose
from memflax.train import Trainer


def test_ranges_are_contiguous_near_equal_and_cover_the_range():
  assert length_buckets.bucket_ranges(1, 20, 3) == [(1, 6), (7, 13), (14, 20)]
  assert length_buckets.bucket_ranges(1, 20, 4) == [(1, 5), (6, 10), (11, 15), (16, 20)]
  assert length_buckets.bucket_ranges(2, 6, 1) == [(2, 6)]
  # More buckets than sizes: one size each.
  assert length_buckets.bucket_ranges(3, 5, 8) == [(3, 3), (4, 4), (5, 5)]


def test_step_choice_is_pure_and_proportional_to_bucket_width():
  ranges = length_buckets.bucket_ranges(1, 20, 3)  # widths 6, 7, 7
  picks = [length_buckets.bucket_for_step(0, s, ranges) for s in range(40_000)]
  assert picks == [length_buckets.bucket_for_step(0, s, ranges) for s in range(40_000)]
  assert picks[:50] != [length_buckets.bucket_for_step(1, s, ranges) for s in range(50)]
  counts = collections.Counter(picks)
  for bucket, (lo, hi) in enumerate(ranges):
    expected = 40_000 * (hi - lo + 1) / 20
    # 5 standard deviations of a binomial count: fails only if the choice is biased.
    assert abs(counts[bucket] - expected) < 5 * np.sqrt(expected), (bucket, counts)


def test_bucket_probabilities_are_their_share_of_the_sizes():
  buckets = length_buckets.task_buckets(tasks.build(compose('ntm', 'copy').task), 3)
  assert [tuple(b.values()) for b in buckets] == [(1, 6), (7, 13), (14, 20)]
  np.testing.assert_allclose(length_buckets.bucket_probabilities(buckets), [0.3, 0.35, 0.35])
  # The same shares as the steps' own draws.
  draws = collections.Counter(length_buckets.bucket_of_step(7, s, buckets) for s in range(30000))
  np.testing.assert_allclose([draws[b] / 30000 for b in range(len(buckets))],
                             length_buckets.bucket_probabilities(buckets), atol=0.01)


def test_every_length_is_as_likely_as_without_buckets():
  # The marginal law of one example's length over training steps: uniform on 1..20.
  config = compose('ntm', 'copy', '', batch_size=8)
  assert config.length_buckets == 3
  trainer = Trainer(config)
  lengths = []
  for step in range(300):
    sizes = trainer.buckets[trainer.step_bucket(step)]
    batch = trainer.task.make_batch(jax.random.fold_in(trainer.data_key, step), 8, **sizes)
    assert batch['inputs'].shape[1] == 2 * sizes['max_length'] + 1
    assert sizes['min_length'] <= int(batch['lengths'].min())
    assert int(batch['lengths'].max()) <= sizes['max_length']
    lengths.extend(np.asarray(batch['lengths']).tolist())
  counts = np.bincount(lengths, minlength=21)[1:]
  expected = len(lengths) / 20
  chi2 = float(np.sum((counts - expected) ** 2 / expected))
  assert chi2 < 43.8, counts  # the 0.1 % point of χ² with 19 degrees of freedom


def test_training_uses_the_bucketed_batch_of_each_step():
  config = compose('ntm', 'copy', 'tiny')
  assert config.length_buckets == 2
  trainer = Trainer(config)
  state = trainer.init_state()
  steps = trainer.compile_train_steps(state, 0)
  assert sorted(steps) == [0, 1]
  used = {trainer.step_bucket(s) for s in range(20)}
  assert used == {0, 1}
  for s in range(6):
    state, metrics = steps[trainer.step_bucket(s)](state)
  assert int(state.step) == 6 and np.isfinite(float(metrics['loss']))


def test_a_task_without_a_size_range_rejects_buckets():
  config = compose('ntm', 'mqar', 'tiny', length_buckets=2)
  with pytest.raises(config_checks.ConfigError, match='length_buckets=2 needs a task'):
    config_checks.validate(config, 1)
  config = compose('ntm', 'copy', 'tiny', length_buckets=0)
  with pytest.raises(config_checks.ConfigError, match='length_buckets must be an integer'):
    config_checks.validate(config, 1)


def test_a_checkpoint_written_before_length_buckets_still_evaluates(tmp_path):
  import json
  from memflax import evaluate
  from memflax.train import train_and_evaluate
  config = compose('ntm', 'copy', 'tiny')
  config.update(num_train_steps=2, checkpoint_every_steps=2, eval_every_steps=2)
  train_and_evaluate(config, tmp_path)
  (metadata,) = tmp_path.glob('checkpoints/*/config/metadata')
  stored = json.loads(metadata.read_text())
  del stored['length_buckets']  # as in every checkpoint written before the field existed
  metadata.write_text(json.dumps(stored))
  # ... whose integrity record matches what it holds (an edited config alone reads as damage)
  from memflax import integrity
  record_path = metadata.parent.parent / integrity.ITEM / 'metadata'
  record = json.loads(record_path.read_text())
  record['documents']['config'] = integrity.digest_document(stored)
  record_path.write_text(json.dumps(record))
  trainer, params, step = evaluate.restore(tmp_path)
  assert step == 2 and trainer.config.length_buckets == 1
  assert trainer.config.model.memory_size == config.model.memory_size
