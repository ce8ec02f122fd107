"""One config on 1, 2, 4 and 8 fake CPU devices with the same global batch: the losses (which
must agree) and the time per step (the cost of splitting the batch and all-reducing).

  python benchmarks/device_scaling.py --out benchmarks/results/device_scaling.json

Each device count runs in its own process (XLA_FLAGS must be set before jax starts) through
the training loop's compiled steps, `--steps` steps from the same initial state; the row
holds every step's loss, the median ms per step over the last `--steps - --warmup` steps,
and the largest loss difference from the 1-device run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from memflax import progress_log  # noqa: E402  (no jax: the measured runs are children)

TRIAL = '''
import json, statistics, sys, time
sys.path.insert(0, {repo!r})
import jax
from benchmarks.train_throughput import load_config
from memflax.train import Trainer
config = load_config({config!r}, {{'batch_size': {batch}}})
trainer = Trainer(config)
state = jax.block_until_ready(trainer.init_state())
steps = trainer.compile_train_steps(state, 0)
losses, times = [], []
for s in range({steps}):
  start = time.perf_counter()
  state, metrics = steps[trainer.step_bucket(s)](state)
  losses.append(float(metrics['loss']))  # a host sync per step: timing includes it alike
  times.append(time.perf_counter() - start)
print(json.dumps(dict(devices=jax.device_count(), losses=losses,
                      ms_per_step=1e3 * statistics.median(times[{warmup}:]))))
'''


def trial(devices: int, config: str, batch: int, steps: int, warmup: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  proc = subprocess.run([sys.executable, '-c', TRIAL.format(
      repo=str(REPO), config=config, batch=batch, steps=steps, warmup=warmup)],
                        env=env, capture_output=True, text=True, timeout=1800, cwd=REPO)
  if proc.returncode != 0:
    return dict(devices=devices, error=proc.stderr.strip().splitlines()[-1:])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/ntm_copy.py')
  parser.add_argument('--batch_size', type=int, default=32, help='global batch')
  parser.add_argument('--devices', default='1,2,4,8')
  parser.add_argument('--steps', type=int, default=40)
  parser.add_argument('--warmup', type=int, default=10)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  counts = args.devices.split(',')
  rows = [trial(int(d), args.config, args.batch_size, args.steps, args.warmup)
          for d in progress_log.bar(counts, len(counts), 'device counts')]
  reference = rows[0].get('losses')
  for row in rows:
    if reference and 'losses' in row:
      row['max_abs_loss_difference_vs_first'] = max(
          abs(a - b) for a, b in zip(row['losses'], reference))
    row.update(config=args.config, global_batch=args.batch_size)
    print(json.dumps({k: v for k, v in row.items() if k != 'losses'}), flush=True)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(rows, indent=2) + '\n')


if __name__ == '__main__':
  main()
