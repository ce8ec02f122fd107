"""Resume on another device count (fault-tolerance issue, point 7): a checkpoint written by
an 8-device run is restored by a 1-device run and the reverse, with the same global batch,
and training goes on with the losses of an uninterrupted run to float tolerance; such a
resume says, in one stdout line, that it cannot be bit for bit.

Every run trains configs/ntm_copy.py:tiny (global batch 8: one sequence per device on 8)
with a constant learning rate, so extending num_train_steps from N to 2N changes nothing
but the length (the tiny preset's cosine schedule would be re-stretched to the new
length; check_compatible compares only the model, task and optimizer sections, so such a
resume is accepted). The batch of step s is a function of (seed, s) alone, and the loss is
a mean of per-sequence means, so 1 and 8 devices compute the same function; only the
order of float sums differs (the gradient all-reduce over 8 devices).

  8 -> 1   N steps on 8 devices, then the same workdir to 2N on 1 device
  1 -> 8   N steps on 1 device, then to 2N on 8 devices
  1 -> 1, 8 -> 8   copies of those workdirs resumed on the count that wrote them: bit for
           bit, and no such line

Tolerance. Measured on this config (2-core CPU, 8 forced host devices): an uninterrupted
8-device run's per-step training losses differ from the 1-device run's by at most
1.7e-7 relative over 60 steps (1 ulp of float32 at ~0.69, most steps exactly equal). A
resume that is wrong, not merely reordered, is off by far more: the next batch's loss
differs by ~1e-2 relative, and restarting Adam's moments changes the very next update.
RTOL = 1e-5 is ~60x the measured drift and ~1000x below a real error.

MEMFLAX_FAULT_REPORT=<path>: one JSON line per resume (tests/fault_report.py).
"""

from __future__ import annotations

import functools
import shutil
import threading

import numpy as np
import pytest

import fault_report
from conftest import read_metrics, run_cli

N = 30
RTOL = 1e-5
ARGS = ['--config=configs/ntm_copy.py:tiny', '--config.lr_schedule=constant',
        '--config.log_every_steps=1', f'--config.checkpoint_every_steps={N}',
        f'--config.eval_every_steps={2 * N}', '--config.log.tensorboard=false']
NOTICE = 'was written on'


def _train(workdir, steps: int, devices: int):
  proc = run_cli('train.py', *ARGS, f'--config.num_train_steps={steps}', f'--workdir={workdir}',
                 devices=devices)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'{devices} device(s)' in proc.stdout
  return proc


def _losses(workdir, first: int, last: int) -> np.ndarray:
  by_step = {r['step']: r['loss'] for r in read_metrics(workdir) if 'loss' in r}
  assert sorted(s for s in by_step if first <= s <= last) == list(range(first, last + 1))
  return np.array([by_step[s] for s in range(first, last + 1)])


def _notices(proc) -> list[str]:
  return [line for line in proc.stdout.splitlines() if NOTICE in line]


@pytest.mark.slow
def test_resume_on_another_device_count_matches_to_float_tolerance(tmp_path):
  runs = {}

  def legs(name, first, then):  # first -> then, first -> first on a copy, uninterrupted
    runs[f'{name}1'] = _train(tmp_path / name, N, devices=first)
    shutil.copytree(tmp_path / name, tmp_path / f'{name}_same')
    runs[f'{name}2'] = _train(tmp_path / name, 2 * N, devices=then)
    runs[f'{name}_same'] = _train(tmp_path / f'{name}_same', 2 * N, devices=first)
    runs[f'ref{first}'] = _train(tmp_path / f'ref{first}', 2 * N, devices=first)

  eight_first = functools.partial(legs, 'a', 8, 1)
  one_first = functools.partial(legs, 'b', 1, 8)

  errors = []

  def guarded(work):
    try:
      work()
    except BaseException as e:  # noqa: BLE001 -- re-raised below
      errors.append(e)

  threads = [threading.Thread(target=guarded, args=(w,)) for w in (eight_first, one_first)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  if errors:
    raise errors[0]

  ref = {1: _losses(tmp_path / 'ref1', N + 1, 2 * N), 8: _losses(tmp_path / 'ref8', N + 1, 2 * N)}
  # The premise, measured here: the two device counts train the same function.
  drift = float(np.max(np.abs(ref[8] - ref[1]) / np.abs(ref[1])))
  cases = [  # (moment, resumed workdir = its process's key, written on, resumed on)
      (f'8->1 at step {N}', 'a', 'a2', 8, 1),
      (f'1->8 at step {N}', 'b', 'b2', 1, 8),
      (f'8->8 at step {N}', 'a_same', 'a_same', 8, 8),
      (f'1->1 at step {N}', 'b_same', 'b_same', 1, 1)]
  trials, failures = [], []
  if drift > RTOL:
    failures.append(f'uninterrupted 8- and 1-device runs differ by {drift:.3g} relative '
                    f'(> rtol {RTOL}): the premise of this test does not hold')
  for moment, workdir, key, written_on, this_run in cases:
    proc = runs[key]
    got = _losses(tmp_path / workdir, N + 1, 2 * N)
    # Cross-count: against the uninterrupted 1-device run (the wording) and, where
    # the resumed part runs on 8, the uninterrupted 8-device run too. Same count: against
    # the uninterrupted run on that count.
    against = {1, this_run} if written_on != this_run else {this_run}
    rel = max(float(np.max(np.abs(got - ref[r]) / np.abs(ref[r]))) for r in against)
    notices = _notices(proc)
    problems = []
    if f'resumed from step {N}' not in proc.stdout:
      problems.append(f'{moment}: did not resume from step {N}: {proc.stdout[:300]}')
    if written_on != this_run:
      losses_ok = rel <= RTOL
      notice_ok = len(notices) == 1 and f'at step {N} ' in notices[0] and \
          f'was written on {written_on} device(s)' in notices[0] and \
          f'this run has {this_run}' in notices[0]
      result = ('mismatch' if not losses_ok else 'no-notice' if not notice_ok
                else 'bit-exact' if rel == 0 else 'within-tolerance')
      if not losses_ok:
        problems.append(f'{moment}: losses of steps {N + 1}..{2 * N} differ from the '
                        f'uninterrupted runs by up to {rel:.3g} relative (rtol {RTOL})')
      if not notice_ok:
        problems.append(f'{moment}: expected one stdout line "memflax: checkpoint at step {N} '
                        f'was written on {written_on} device(s); this run has {this_run}: ...", '
                        f'got {notices}')
    else:  # the same device count: bit for bit with the uninterrupted run, and no line
      exact = np.array_equal(got, ref[this_run])
      result = 'spurious-notice' if notices else 'bit-exact' if exact else 'mismatch'
      if notices:
        problems.append(f'{moment}: a same-device-count resume printed {notices}')
      if not exact:
        problems.append(f'{moment}: losses not bit-exact with the uninterrupted '
                        f'{this_run}-device run (max relative difference {rel:.3g})')
    if problems and result in ('bit-exact', 'within-tolerance'):
      result = 'error'
    trials.append(dict(fault='device_count', moment=moment, result=result,
                       max_rel_loss_diff=rel, against=sorted(against), rtol=RTOL,
                       notice=notices))
    failures += problems
  for key in ('a1', 'b1', 'ref1', 'ref8'):  # fresh runs have no such line either
    if _notices(runs[key]):
      failures.append(f'fresh run {key} printed {_notices(runs[key])}')
  fault_report.append(trials)
  for t in trials:
    print(t)
  print(f'uninterrupted 8 vs 1 device(s): max relative loss difference {drift:.3g}')
  assert not failures, '\n'.join(failures)
