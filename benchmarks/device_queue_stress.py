"""Does the full-size NTM train step survive many steps on 8 fake CPU devices?

  python benchmarks/device_queue_stress.py --out benchmarks/results/device_queue_stress.json

Runs the train step in a fresh process per trial (XLA_FLAGS must be set before jax
starts) with the host allowed to run `bound` steps ahead of the devices (0 = no
bound, as a plain jitted loop does; the training loop uses memflax.train.
MAX_STEPS_IN_FLIGHT). XLA aborts a wedged all-reduce; this script shortens XLA's
40 s wait to 15 s so a hang costs less. Each trial's exit code and time go to the
JSON: 0 finished, 134 aborted in the all-reduce.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from memflax import progress_log  # noqa: E402  (no jax: the measured runs are children)

TRIAL = '''
import sys, time
import jax
sys.path.insert(0, {repo!r})
from configs.ntm_copy import get_config
from memflax.train import DispatchWindow, Trainer
bound, steps = {bound}, {steps}
trainer = Trainer(get_config())
state = jax.block_until_ready(trainer.init_state())
step = trainer.make_train_step().lower(state).compile()
queue, start = DispatchWindow(bound or None), time.perf_counter()
for i in range(steps):
  state, metrics = step(state)
  queue.add(metrics)
jax.block_until_ready(state)
print(time.perf_counter() - start)
'''


def trial(bound: int, steps: int, devices: int) -> dict:
  env = dict(os.environ)
  env['XLA_FLAGS'] = (f'--xla_force_host_platform_device_count={devices} '
                      '--xla_cpu_collective_call_terminate_timeout_seconds=15')
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, '-c', TRIAL.format(repo=str(REPO), bound=bound,
                                                            steps=steps)],
                        env=env, capture_output=True, text=True, timeout=900)
  seconds = float(proc.stdout.split()[-1]) if proc.returncode == 0 else None
  return dict(bound=bound, steps=steps, devices=devices, returncode=proc.returncode,
              finished=proc.returncode == 0, loop_s=seconds,
              wall_s=time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--bounds', default='0,2', help='steps in flight to try (0: unbounded)')
  parser.add_argument('--trials', type=int, default=3)
  parser.add_argument('--steps', type=int, default=600)
  parser.add_argument('--devices', type=int, default=8)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  rows = []
  jobs = [int(b) for _ in range(args.trials) for b in args.bounds.split(',')]
  for bound in progress_log.bar(jobs, len(jobs), 'trials'):
    rows.append(trial(bound, args.steps, args.devices))
    print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2) + '\n')


if __name__ == '__main__':
  main()
