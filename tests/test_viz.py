"""Every plot of memflax.viz writes a non-empty PNG from real short runs: a tiny NTM on copy
(learning curve, weightings, sequence, memory contents, memory profile) and a tiny two-task
continual sequence with an LSTM (accuracy matrix, several runs' curves)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from conftest import REPO
from memflax import evaluate, viz
from memflax.config_presets import compose
from memflax.continual.config import compose_sequence
from memflax.continual.runner import train_sequence
from memflax.metric_writer import MetricWriter
from memflax.train import train_and_evaluate

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def assert_png(path, returned):
  assert returned == path
  data = path.read_bytes()
  assert data.startswith(PNG_SIGNATURE) and len(data) > 2_000, (path, len(data))


@pytest.fixture(scope='module')
def ntm_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('ntm_copy')
  config = compose('ntm', 'copy', 'tiny')  # the variant sets the run length: override after
  config.update(num_train_steps=20, log_every_steps=5, eval_every_steps=10,
                checkpoint_every_steps=20, length_buckets=1)
  train_and_evaluate(config, workdir)
  trainer, params, _ = evaluate.restore(workdir)
  return workdir, trainer, params


@pytest.fixture(scope='module')
def continual_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('cl_lstm')
  config = compose_sequence('lstm', ('copy', 'repeat_copy'), 'tiny')
  config.update(num_train_steps=6, log_every_steps=3, eval_every_steps=3,
                checkpoint_every_steps=6, keep_checkpoints=1)
  config.eval.num_sequences = 16
  return workdir, train_sequence(config, workdir)


def test_learning_curves_of_several_runs_in_training_sequences(ntm_run, continual_run, tmp_path):
  ntm_dir, cl_dir = ntm_run[0], continual_run[0]
  runs = {'ntm': ntm_dir, 'lstm copy': cl_dir / 'tasks' / '0_copy'}
  # The x axis is step × batch size: the NTM's eval rows at steps 10 and 20, batch 8.
  evals = [r for r in MetricWriter(ntm_dir).read() if 'eval_bit_errors_per_seq' in r]
  assert viz.read_curve(ntm_dir, batch_size=8) == [
      (80, evals[0]['eval_bit_errors_per_seq']), (160, evals[1]['eval_bit_errors_per_seq'])]
  path = tmp_path / 'curves.png'
  assert_png(path, viz.plot_learning_curves(runs, path, batch_size={'ntm': 8, 'lstm copy': 8}))
  path = tmp_path / 'loss.png'
  assert_png(path, viz.plot_learning_curves([ntm_dir], path, metric='loss', log_y=True))
  with pytest.raises(ValueError, match='no row'):
    viz.plot_learning_curves(runs, tmp_path / 'x.png', metric='no_such_metric')


def test_weightings_sequence_and_memory_contents(ntm_run, tmp_path):
  _, trainer, params = ntm_run
  trace = evaluate.trace_one(trainer, params, 5)
  for name, plot in (('weightings', viz.plot_weightings), ('sequence', viz.plot_sequence)):
    path = tmp_path / f'{name}.png'
    assert_png(path, plot(trace, path, title=name))
  memory = trace['memory']  # the memory after every step, kept by trace_one
  assert memory.shape == (trace['inputs'].shape[0], 16, 8)  # [T, N, W] of the tiny NTM
  path = tmp_path / 'memory.png'
  assert_png(path, viz.plot_memory(memory, path, title='tiny NTM'))
  with pytest.raises(ValueError, match=r'\[T, N, W\]'):
    viz.plot_memory(memory[0], tmp_path / 'bad.png')


def test_memory_profiles(ntm_run, tmp_path):
  _, trainer, params = ntm_run
  profile = evaluate.memory_profile(trainer, params, largest=6, num_sequences=16, points=2)
  path = tmp_path / 'profile.png'
  assert_png(path, viz.plot_profile(profile, path))
  path = tmp_path / 'profiles.png'
  assert_png(path, viz.plot_profiles({'a': profile, 'b': profile}, path))


def test_accuracy_matrix_from_a_continual_run(continual_run, tmp_path):
  workdir, result = continual_run
  assert np.shape(result['R']) == (3, 2)
  path = tmp_path / 'R.png'
  assert_png(path, viz.plot_accuracy_matrix(workdir, path))  # read from continual.json
  path = tmp_path / 'R_bits.png'
  assert_png(path, viz.plot_accuracy_matrix(result, path, key='R_bit_errors_per_seq'))
  # Into axes of the caller's figure (two strategies side by side in the notebook).
  fig = Figure(figsize=(10, 4))
  left, right = fig.subplots(1, 2)
  assert viz.plot_accuracy_matrix(result, ax=left) is fig
  path = tmp_path / 'pair.png'
  assert_png(path, viz.plot_accuracy_matrix(json.loads((workdir / 'continual.json').read_text()),
                                            path, title='right', ax=right))
  with pytest.raises(ValueError, match='no'):
    viz.plot_accuracy_matrix(result, tmp_path / 'x.png', key='R_nothing')


def test_table_and_figure_without_path(ntm_run, tmp_path):
  workdir = ntm_run[0]
  rows = [dict(model='ntm', steps_per_sec=r['steps_per_sec'], loss=r['loss'])
          for r in MetricWriter(workdir).read() if 'loss' in r]
  path = tmp_path / 'table.png'
  assert_png(path, viz.plot_table(rows, path, title='tiny NTM', formats={'loss': '{:.3f}'}))
  assert isinstance(viz.plot_learning_curves({'ntm': workdir}), Figure)


def test_fast_weight_speed_replots_its_json_on_log_axes(tmp_path):
  rows = [dict(form=form, T=t, ms=ms, oom=False) for form, t, ms in
          [('delta_chunk', 256, 19.0), ('delta_chunk', 2048, 139.0), ('softmax', 256, 13.0),
           ('softmax', 2048, 824.0), ('softmax', 8192, None)]]
  out = tmp_path / 'speed.json'
  out.write_text(json.dumps(dict(rows=rows)))
  proc = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'fast_weight_speed.py'),
                         '--replot', f'--out={out}'], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  assert_png(tmp_path / 'speed.png', Path(proc.stdout.strip()))
  fig = viz.plot_curves({'a': [(256, 19.0), (2048, 139.0)]}, log_x=True, log_y=True)
  ax = fig.axes[0]
  assert (ax.get_xscale(), ax.get_yscale()) == ('log', 'log')
  np.testing.assert_array_equal(ax.lines[0].get_xdata(), [256, 2048])


@pytest.mark.parametrize('backend, expected', [(None, 'agg'), ('svg', 'svg')])
def test_backend_is_agg_for_scripts_and_left_alone_when_named(backend, expected):
  env = {k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}
  if backend:
    env['MPLBACKEND'] = backend  # what a notebook kernel does (its inline backend)
  out = subprocess.run([sys.executable, '-c', 'import memflax.viz, matplotlib; '
                        'print(matplotlib.get_backend().lower())'], env=env, capture_output=True,
                       text=True, check=True).stdout.split()[-1]
  assert out == expected
