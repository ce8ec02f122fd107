"""memflax/cpu_cores.py: one CPU device per core unless the user chose a count, meshes that
fit the batch, and XLA's scheduler flag, each checked in a fresh process (the CPU backend
reads both settings once, when it starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO, cli_env, run_cli
from memflax import cpu_cores

PROBE = r'''
import json, os, sys
import jax
from ml_collections import ConfigDict
from memflax import cpu_cores
cores = int(sys.argv[1])
if cores:
  cpu_cores.usable_cores = lambda: cores  # stands in for a machine with that many cores
asked = cpu_cores.use_every_core()
def used(batch, eval_sequences):
  config = ConfigDict(dict(batch_size=batch, eval=dict(num_sequences=eval_sequences)))
  return len(cpu_cores.run_devices(config))
print(json.dumps(dict(asked=asked, devices=jax.device_count(),
                      xla_flags=os.environ.get('XLA_FLAGS', ''),
                      used={f'{b},{e}': used(b, e) for b, e in
                            [(32, 1000), (8, 1000), (1, 100), (6, 1000), (12, 30), (12, 7)]})))
'''


def _probe(cores: int, xla_flags: str | None = None) -> dict:
  env = cli_env()
  if xla_flags is not None:
    env['XLA_FLAGS'] = xla_flags
  proc = subprocess.run([sys.executable, '-c', PROBE, str(cores)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.splitlines()[-1])


def test_one_device_per_core_and_meshes_that_divide_the_batch():
  out = _probe(cores=4)
  assert out['asked'] == 4 and out['devices'] == 4
  # The most devices (≤ 4) dividing gcd(batch, eval sequences).
  assert out['used'] == {'32,1000': 4, '8,1000': 4, '1,100': 1, '6,1000': 2, '12,30': 3,
                         '12,7': 1}
  assert cpu_cores.SCHEDULER_FLAG in out['xla_flags'].split()


def test_at_most_max_devices():
  out = _probe(cores=64)
  assert out['asked'] == cpu_cores.MAX_DEVICES == out['devices']


def test_a_single_core_machine_keeps_one_device():
  out = _probe(cores=1)
  assert out['asked'] == 0 and out['devices'] == 1
  assert out['used']['32,1000'] == 1


def test_the_users_device_count_wins_and_uses_every_device():
  out = _probe(cores=4, xla_flags='--xla_force_host_platform_device_count=3')
  assert out['asked'] == 0 and out['devices'] == 3
  # Not memflax's choice: every device, and config_checks reports a batch they do not divide.
  assert set(out['used'].values()) == {3}
  assert cpu_cores.SCHEDULER_FLAG in out['xla_flags'].split()


def test_the_users_scheduler_choice_wins():
  mine = '--xla_cpu_enable_concurrency_optimized_scheduler=true'
  out = _probe(cores=2, xla_flags=mine)
  assert out['xla_flags'] == mine and out['devices'] == 2


def test_train_py_uses_every_core_and_says_so(tmp_path):
  """The README's plain command, no flags: as many devices as this machine has usable cores
  (at most 8) where they divide the tiny config's batch of 8, and a log line saying so."""
  cores = min(len(os.sched_getaffinity(0)), 8)
  expected = max(d for d in range(1, cores + 1) if 8 % d == 0)
  proc = run_cli('train.py', '--config=configs/ntm_copy.py:tiny', '--config.num_train_steps=4',
                 '--config.log.tensorboard=false', f'--workdir={tmp_path / "run"}')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f'{expected} device(s), 1 process(es), from scratch' in proc.stdout


ONE_DEVICE_PROBE = r'''
import json, os, sys
import jax
from memflax import cpu_cores
cpu_cores.usable_cores = lambda: 4  # stands in for a machine with 4 cores
before = sorted(os.sched_getaffinity(0))
asked = cpu_cores.use_every_core(*map(int, sys.argv[1:]))
print(json.dumps(dict(asked=asked, devices=jax.device_count(), before=before,
                      after=sorted(os.sched_getaffinity(0)))))
'''


def _one_device_probe(*rows: int, keep_free: bool = False) -> dict:
  env = cli_env()
  if keep_free:
    env['MEMFLAX_ONE_CORE'] = '0'
  proc = subprocess.run([sys.executable, '-c', ONE_DEVICE_PROBE, *map(str, rows)], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.splitlines()[-1])


def test_a_process_of_one_device_runs_keeps_one_device_and_one_core():
  out = _one_device_probe(1, 7)  # batch 1, and a run whose 7 rows no count up to 4 divides
  assert out['asked'] == 0 and out['devices'] == 1
  assert len(out['after']) == 1 and out['after'][0] in out['before']


def test_one_device_run_among_wider_ones_keeps_every_core():
  out = _one_device_probe(1, 8)
  assert out['asked'] == 4 and out['devices'] == 4 and out['after'] == out['before']


def test_memflax_one_core_0_leaves_a_one_device_process_free():
  out = _one_device_probe(1, keep_free=True)
  assert out['asked'] == 0 and out['devices'] == 1 and out['after'] == out['before']
