"""Training throughput of a config, compile time reported apart from step time.

  python benchmarks/train_throughput.py --out benchmarks/results/ntm_throughput.json

For each batch size: compile the train step once (timed), run `--warmup` steps,
then time `--steps` steps `--repeats` times and report the median. Writes a JSON
list of rows {model, batch_size, sequences_per_sec, ms_per_step, compile_s, ...}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memflax.train import Trainer  # noqa: E402


def load_config(path: str):
  spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def measure(config_path: str, batch_size: int, steps: int, warmup: int, repeats: int) -> dict:
  config = load_config(config_path)
  config.batch_size = batch_size
  trainer = Trainer(config)
  state = jax.block_until_ready(trainer.init_state())
  start = time.perf_counter()
  step = trainer.make_train_step().lower(state).compile()
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    state, metrics = step(state)
  jax.block_until_ready(metrics)
  timings = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state)
    jax.block_until_ready(metrics)
    timings.append((time.perf_counter() - start) / steps)
  per_step = statistics.median(timings)
  return dict(model=config.model.name, config=config_path, batch_size=batch_size,
              sequences_per_sec=batch_size / per_step, ms_per_step=1e3 * per_step,
              compile_s=compile_s, steps_timed=steps, repeats=repeats,
              ms_per_step_all=[round(1e3 * t, 3) for t in timings],
              devices=jax.device_count(), backend=jax.default_backend(),
              num_params=sum(x.size for x in jax.tree.leaves(state.params)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/ntm_copy.py')
  parser.add_argument('--batch_sizes', default='1,32')
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--warmup', type=int, default=20)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--out', required=True, help='JSON file to write')
  args = parser.parse_args()
  rows = []
  for batch_size in (int(b) for b in args.batch_sizes.split(',')):
    row = measure(args.config, batch_size, args.steps, args.warmup, args.repeats)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()
                      if k != 'ms_per_step_all'}), flush=True)
    rows.append(row)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(rows, indent=2) + '\n')


if __name__ == '__main__':
  main()
