"""TensorBoard event files of a real short run, read back with tensorboard's own reader."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from memflax.config_presets import compose
from memflax.metric_writer import MetricWriter
from memflax.train import learning_rate_schedule, train_and_evaluate


def tiny_config(**overrides):
  config = compose('ntm', 'copy', 'tiny')
  config.update({**dict(num_train_steps=40, log_every_steps=10, eval_every_steps=20,
                       checkpoint_every_steps=20), **overrides})
  config.eval.num_sequences = 64
  config.length_buckets = 1  # one compiled shape: this file tests logging, not buckets
  return config


def read_events(workdir):
  events = EventAccumulator(str(workdir), size_guidance={'scalars': 0, 'images': 0})
  events.Reload()
  return events


def scalar_series(events, tag):
  return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('tb')
  config = tiny_config()
  train_and_evaluate(config, workdir)
  return config, workdir


def test_scalars_match_metrics_jsonl(run):
  config, workdir = run
  events, rows = read_events(workdir), MetricWriter(workdir).read()
  train_rows = [r for r in rows if 'loss' in r]
  eval_rows = [r for r in rows if 'eval_loss' in r]
  for key in ('loss', 'bit_errors_per_seq', 'grad_norm', 'param_norm', 'learning_rate',
              'steps_per_sec', 'sequences_per_sec'):
    written = scalar_series(events, f'train/{key}')
    assert [s for s, _ in written] == [r['step'] for r in train_rows] == [10, 20, 30, 40]
    np.testing.assert_allclose([v for _, v in written], [r[key] for r in train_rows], rtol=1e-6)
  for key in ('loss', 'bit_errors_per_seq'):
    written = scalar_series(events, f'eval/{key}')
    assert [s for s, _ in written] == [20, 40]
    np.testing.assert_allclose([v for _, v in written], [r[f'eval_{key}'] for r in eval_rows],
                               rtol=1e-6)
  # The learning rate logged at step s is the one the update of step s used.
  schedule = learning_rate_schedule(config)
  np.testing.assert_allclose([v for _, v in scalar_series(events, 'train/learning_rate')],
                             [float(schedule(s - 1)) for s in (10, 20, 30, 40)], rtol=1e-6)


def test_images_of_weightings_and_memory_at_each_evaluation(run):
  config, workdir = run
  events = read_events(workdir)
  n, w = config.model.memory_size, config.model.memory_width
  for tag in ('weightings/write_weights_head0', 'weightings/read_weights_head0',
              'memory/final', 'memory/slot_norm_over_time', 'sequence/target_over_output'):
    assert [e.step for e in events.Images(tag)] == [20, 40], tag
  final = events.Images('memory/final')[-1]
  assert (final.height, final.width) == (n, w)
  weights = events.Images('weightings/write_weights_head0')[-1]
  assert weights.height == n and weights.width > 1  # slots × time


def test_resume_purges_events_past_the_checkpoint(run, tmp_path):
  config, finished = run
  shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
  # The run "died" after step 40 was logged but before its checkpoint: step 20 is newest.
  shutil.rmtree(tmp_path / 'checkpoints' / '40')
  train_and_evaluate(config, tmp_path)
  events = read_events(tmp_path)
  assert [s for s, _ in scalar_series(events, 'train/loss')] == [10, 20, 30, 40]
  assert [s for s, _ in scalar_series(events, 'eval/loss')] == [20, 40]
  # Resume is bit-exact, so the rewritten curve equals metrics.jsonl's (one row per step).
  rows = [r for r in MetricWriter(tmp_path).read() if 'loss' in r]
  np.testing.assert_allclose([v for _, v in scalar_series(events, 'train/loss')],
                             [r['loss'] for r in rows], rtol=1e-6)


def test_no_event_files_when_switched_off(tmp_path):
  config = tiny_config(num_train_steps=10, eval_every_steps=10, checkpoint_every_steps=10)
  config.log.tensorboard = False
  train_and_evaluate(config, tmp_path)
  assert not list(tmp_path.glob('events.out.tfevents.*'))
  assert (tmp_path / 'metrics.jsonl').exists()
