"""The Memorizing Transformer as a byte LM through the harness: trains on document lanes,
eval.py reports bits per byte against the bigram on the same bytes and what the store does,
and facts written to the store survive a restart in a new process."""

import json
import os
import subprocess
import sys
import sysconfig

import jax
import numpy as np
import pytest

from conftest import REPO, cli_env, error_lines, read_metrics, run_cli
from memflax.data import bigram_bits_per_byte, bigram_counts, load_text_corpus
from memflax.data.document_stream import DocumentLanes

TINY = '--config=configs/knn_transformer_lm.py:tiny'
JSON_PACKAGE = os.path.join(sysconfig.get_paths()['stdlib'], 'json')


@pytest.fixture(scope='module')
def knn_run(tmp_path_factory):
  root = tmp_path_factory.mktemp('knn')
  workdir, data = root / 'run', root / 'data'
  proc = run_cli('train.py', TINY, f'--workdir={workdir}', f'--config.data.dir={data}',
                 '--config.num_train_steps=40', '--config.eval_every_steps=20')
  assert proc.returncode == 0, proc.stderr
  return workdir, data


def test_trains_on_document_lanes_and_eval_reports_the_store(knn_run):
  workdir, data = knn_run
  evals = [r['eval_bits_per_byte'] for r in read_metrics(workdir) if 'eval_bits_per_byte' in r]
  assert len(evals) == 2 and evals[1] < evals[0] < 8.5
  proc = run_cli('eval.py', f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr
  report = json.loads((workdir / 'eval.json').read_text())
  lm, store = report['lm'], report['store']
  # The bigram baseline is scored on exactly the bytes the model was: every validation
  # document with its closing NUL, from the lanes.
  corpus = load_text_corpus([JSON_PACKAGE], data_dir=data)
  lanes = DocumentLanes(corpus, 'validation', 32)
  expected = bigram_bits_per_byte(bigram_counts(corpus.chunks('train')),
                                  lanes.scored_windows(8))
  assert lm['bigram_bits_per_byte'] == pytest.approx(expected, rel=1e-9)
  assert lm['num_windows'] == int(lanes.segments.sum())
  (block, stats), = store.items()
  assert block.endswith('attention') and stats['memory_size'] == 64
  assert len(stats['gate']) == 2 and all(0 < g < 1 for g in stats['gate'])
  assert all(-1 <= h <= 1 for h in stats['hit_score'])  # cosines: keys are normalised
  # One validation document on 8 lanes, longer than the store: its lane's store fills up
  # and stays full; the 7 idle lanes stay empty (occupancy is a mean over rows).
  assert stats['occupancy_by_step'][0] == 0.0
  assert stats['occupancy_final'] == pytest.approx(1 / 8)
  assert (workdir / 'eval_store.png').stat().st_size > 0
  assert 'store ' in proc.stdout and 'gate per head' in proc.stdout


@pytest.mark.slow
def test_eight_devices_match_one(knn_run, tmp_path):
  """Each device keeps the stores of its own rows; the losses equal one device's."""
  _, data = knn_run

  def final(workdir, devices):
    proc = run_cli('train.py', TINY, f'--workdir={workdir}', f'--config.data.dir={data}',
                   '--config.num_train_steps=12', '--config.log_every_steps=12',
                   '--config.eval_every_steps=12', devices=devices)
    assert proc.returncode == 0, proc.stderr
    rows = read_metrics(workdir)
    return {**next(r for r in rows if r['step'] == 12 and 'loss' in r),
            **next(r for r in rows if r['step'] == 12 and 'eval_loss' in r)}

  one, eight = final(tmp_path / 'one', None), final(tmp_path / 'eight', 8)
  for key in ('loss', 'grad_norm', 'eval_bits_per_byte'):
    assert eight[key] == pytest.approx(one[key], rel=1e-4), key


def test_sample_refuses_a_store_model_in_one_line(knn_run):
  workdir, _ = knn_run
  proc = run_cli('sample.py', f'--workdir={workdir}', '--prompt=def ', '--length=10')
  lines = error_lines(proc)
  assert proc.returncode == 2 and len(lines) == 1 and 'eval.py' in lines[0], proc.stderr


def test_facts_in_the_store_survive_a_restart(tmp_path):
  worker = str(REPO / 'tests' / 'store_restart_worker.py')
  for mode in ('present', 'query'):  # two processes: the second only restores and asks
    proc = subprocess.run([sys.executable, worker, mode, str(tmp_path)], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
  present, query = np.load(tmp_path / 'present.npz'), np.load(tmp_path / 'query.npz')
  assert (query['count'] == 96).all() and (present['count'] == 96).all()
  np.testing.assert_array_equal(query['logits'], present['logits'])  # recall, bit for bit
  # ... and the store is what answers: without it the same queries get other logits.
  assert np.abs(query['logits'] - present['empty']).max() > 1e-3


@pytest.mark.slow
def test_continual_snapshots_keep_the_store(tmp_path):
  from memflax.checkpoint import Checkpointer
  from memflax.continual import snapshots
  from memflax.continual.config import compose_sequence, stdlib_halves
  from memflax.continual.runner import Sequence, train_sequence

  fields = stdlib_halves('tiny')
  for task in fields.values():
    task['stream_documents'] = True
  config = compose_sequence('knn_transformer', ('stdlib_a', 'stdlib_b'), 'tiny',
                            task_fields=fields, eval_sequences=16)
  config.update(num_train_steps=6, eval_every_steps=6, checkpoint_every_steps=6)
  config.data.dir = str(tmp_path / 'data')
  workdir = tmp_path / 'run'
  train_sequence(config, workdir)
  found = snapshots.list_snapshots(workdir)
  assert [name for _, name, _ in found] == ['0_stdlib_a', '1_stdlib_b']
  trainer = Sequence(config).trainer(0)
  abstract = trainer.abstract_state()
  for index, name, path in found:
    memory = snapshots.restore_memory(path, abstract.memory)
    checkpointer = Checkpointer(workdir / 'tasks' / name)
    try:
      final, step, _ = checkpointer.restore_newest(abstract)
    finally:
      checkpointer.close()
    assert step == 6
    for a, b in zip(jax.tree.leaves(memory), jax.tree.leaves(final.memory)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the task's final store
    counts = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(memory)
              if 'count' in jax.tree_util.keystr(path)]
    assert counts and all(np.asarray(c).min() > 0 for c in counts)  # not the empty store
  # Rerunning the finished sequence verifies every snapshot, store included, and keeps it.
  train_sequence(config, workdir)
  assert not (workdir / 'corrupt_snapshots').exists()


@pytest.mark.parametrize('override, expected', [
    (['--config.model.top_k=65'], 'model.top_k'),  # more than the 64 entries
    (['--config.model.memory_size=-1'], 'model.memory_size'),
    (['--config.model.approximate=true', '--config.model.recall_target=1.5'],
     'model.recall_target'),
    (['--config.task.eval_piece_segments=0'], 'task.eval_piece_segments'),
])
def test_bad_store_settings_are_one_line_before_anything_is_written(tmp_path, override,
                                                                    expected):
  workdir = tmp_path / 'run'
  proc = run_cli('train.py', TINY, f'--workdir={workdir}', *override)
  lines = error_lines(proc)
  assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr
  assert not workdir.exists()
