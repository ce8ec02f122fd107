"""The continual runner end to end on a tiny sequence: snapshots, EWC through the hooks,
eval.py --snapshot, init_from, and bad input (one error line, exit 2, nothing lost)."""

import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import error_lines, run_cli
from configs import cl_ntm_tasks
from memflax.continual import runner, snapshots

CONFIG = '--config=configs/cl_ntm_tasks.py:tiny'
# Two tasks whose interface (inputs 10 wide, outputs 9) matches the default sequence's.
COMMON = ['--config.num_train_steps=30', '--config.checkpoint_every_steps=10',
          '--config.keep_checkpoints=1', '--config.log_every_steps=10',
          '--config.eval_every_steps=30', '--config.eval.num_sequences=64']


def _config(**continual):
  c = cl_ntm_tasks.get_config('tiny')
  c.update(num_train_steps=30, checkpoint_every_steps=10, keep_checkpoints=1,
           log_every_steps=10, eval_every_steps=30)
  c.eval.num_sequences = 64
  c.continual.update(**{'tasks': 'copy,repeat_copy', 'strategy': 'ewc', **continual})
  return c


def _digest(path: Path) -> dict:
  return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(path.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def ewc_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('cl') / 'ewc'
  result = runner.train_sequence(_config(), workdir)
  return workdir, result


def test_run_writes_snapshots_report_and_keeps_them_through_cleanup(ewc_run):
  workdir, result = ewc_run
  assert [n for _, n, _ in snapshots.list_snapshots(workdir)] == ['0_copy', '1_repeat_copy']
  on_disk = json.loads((workdir / 'continual.json').read_text())
  assert on_disk == json.loads(json.dumps(result))
  assert set(on_disk) >= {'strategy', 'tasks', 'R', 'ACC', 'BWT', 'FWT', 'forgetting'}
  assert np.array(on_disk['R']).shape == (3, 2) and on_disk['strategy'] == 'ewc'
  assert (workdir / 'continual_R.png').stat().st_size > 1000
  # keep_checkpoints=1: the rolling cleanup left one step checkpoint per task (of 3
  # saved) and never touched the snapshots, which live beside the checkpoints.
  for name in ('0_copy', '1_repeat_copy'):
    assert sorted(p.name for p in (workdir / 'tasks' / name / 'checkpoints').iterdir()
                  if p.name.isdigit()) == ['30']
  # Snapshot 0 was written before task 1 started and never modified after.
  snap0 = workdir / 'snapshots' / '0_copy'
  first_task1_file = min(p.stat().st_mtime for p in (workdir / 'tasks' / '1_repeat_copy').rglob('*'))
  assert max(p.stat().st_mtime for p in snap0.rglob('*') if p.is_file()) <= first_task1_file
  # The metrics stored in it are those of its parameters (row == re-evaluation).
  seq = runner.Sequence(_config())
  params = snapshots.restore_params(snap0, seq.abstract_params())
  assert [seq.evaluate(params, j)['accuracy'] for j in range(2)] == result['R'][1]
  with pytest.raises(FileExistsError, match='immutable'):
    snapshots.save(snap0, {'params': params, 'opt_state': {}}, {})


def test_ewc_penalty_is_nonzero_and_its_gradient_is_direct(ewc_run):
  workdir, _ = ewc_run
  config = _config()
  seq = runner.Sequence(config)
  past = runner._Past(seq, workdir)
  term = runner.make_regulariser(seq, past, 1, None)
  theta0, fisher0 = past.params(0), past.fisher(0)
  assert sum(float(jnp.sum(f)) for f in jax.tree.leaves(fisher0)) > 0
  theta = past.params(1)  # after task 1: moved away from θ0
  value, _ = term(None, theta, 0, 0)
  lam = config.continual.ewc_lambda
  direct = 0.5 * lam * sum(float(jnp.sum(f * (t - a) ** 2)) for t, a, f in zip(
      jax.tree.leaves(theta), jax.tree.leaves(theta0), jax.tree.leaves(fisher0)))
  assert float(value) > 0
  assert float(value) == pytest.approx(direct, rel=1e-5)
  grad = jax.grad(lambda p: term(None, p, 0, 0)[0])(theta)
  for g, t, a, f in zip(*(jax.tree.leaves(x) for x in (grad, theta, theta0, fisher0))):
    np.testing.assert_allclose(g, lam * f * (t - a), rtol=1e-5, atol=1e-12)
  # Training task 1 really carried the penalty: logged, positive.
  rows = [json.loads(l) for l in
          (workdir / 'tasks' / '1_repeat_copy' / 'metrics.jsonl').read_text().splitlines()]
  assert [r['penalty'] > 0 for r in rows if 'penalty' in r] == [True, True, True]
  assert all('penalty' not in r for r in
             map(json.loads, (workdir / 'tasks' / '0_copy' / 'metrics.jsonl').read_text().splitlines()))


def test_eval_snapshot_reproduces_the_row(ewc_run):
  workdir, result = ewc_run
  proc = run_cli('eval.py', f'--workdir={workdir}', '--snapshot=1')
  assert proc.returncode == 0, proc.stderr
  out = json.loads((workdir / 'eval_snapshot_1_repeat_copy.json').read_text())
  assert [out['results'][k]['accuracy'] for k in ('copy', 'repeat_copy')] == result['R'][2]


def test_warm_start_from_a_foreign_snapshot(ewc_run, tmp_path):
  workdir, result = ewc_run
  source = workdir / 'snapshots' / '1_repeat_copy'
  config = _config(tasks='repeat_copy,associative_recall', strategy='naive',
                   init_from=str(source))
  config.num_train_steps = 5
  new = runner.train_sequence(config, tmp_path / 'warm')
  # b (row 0) of the new run is the foreign snapshot's accuracy: same held-out sequences
  # for a task key whatever its place in the sequence.
  assert new['R'][0][0] == result['R'][2][1]
  assert new['init_from'] == str(source)


def _tree_digest(workdir):
  return {name: _digest(path) for _, name, path in snapshots.list_snapshots(workdir)}


@pytest.mark.parametrize('args, message', [
    (['--config.continual.tasks='], 'continual.tasks is empty'),
    (['--config.continual.strategy=si'], "continual.strategy must be one of"),
    (['--config.continual.tasks=copy,sorting'], "unknown task(s) ['sorting']"),
    (['--config.continual.init_from=/nonexistent/snapshots/0_copy'], 'no snapshot'),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
  workdir = tmp_path / 'run'
  proc = run_cli('train.py', CONFIG, f'--workdir={workdir}', *COMMON, *args)
  assert proc.returncode == 2
  assert error_lines(proc) == [error_lines(proc)[0]] and message in error_lines(proc)[0]
  assert error_lines(proc)[0].startswith('error: ')
  assert not workdir.exists()


def test_incompatible_snapshots_are_refused_and_kept(ewc_run, tmp_path):
  workdir, _ = ewc_run
  before = _tree_digest(workdir)
  bigger = '--config.model.controller_size=48'
  # Another model in a workdir holding snapshots of this one.
  proc = run_cli('train.py', CONFIG, f'--workdir={workdir}', *COMMON, bigger,
                 '--config.continual.tasks=copy,repeat_copy')
  assert proc.returncode == 2 and len(error_lines(proc)) == 1
  assert 'different model' in proc.stderr
  # A foreign snapshot of another model as init_from.
  fresh = tmp_path / 'fresh'
  proc = run_cli('train.py', CONFIG, f'--workdir={fresh}', *COMMON, bigger,
                 f'--config.continual.init_from={workdir}/snapshots/0_copy')
  assert proc.returncode == 2 and len(error_lines(proc)) == 1
  assert 'another model or interface' in proc.stderr
  assert not fresh.exists()
  # eval.py on a snapshot that does not exist.
  proc = run_cli('eval.py', f'--workdir={workdir}', '--snapshot=5')
  assert proc.returncode == 2 and error_lines(proc) == [
      f"error: no snapshot '5' in {workdir}/snapshots (snapshots there: 0_copy, 1_repeat_copy)"]
  assert _tree_digest(workdir) == before


def test_continual_table_refuses_a_missing_config_before_training(tmp_path):
  proc = run_cli('benchmarks/continual_table.py', '--config=configs/cl_nope.py',
                 f'--out={tmp_path}/table.json', f'--workdir={tmp_path}/runs')
  assert proc.returncode == 2 and 'no file configs/cl_nope.py' in error_lines(proc)[-1]
  assert not (tmp_path / 'table.json').exists() and not (tmp_path / 'runs').exists()
