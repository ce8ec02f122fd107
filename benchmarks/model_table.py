"""Model × (parameters, ms per step at batch 32, bit errors after a fixed sequence budget).

  python benchmarks/model_table.py --out benchmarks/results/model_table.json

Each model trains on copy (lengths 1..20) with its own config's optimizer and batch
size for `--budget` training sequences; the bit errors are measured on 1,000 held-out
sequences at the end. Step time is the median of `--repeats` timings at batch 32,
compile time excluded. Rows are written as they finish, so a long run keeps what it has.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.train_throughput import load_config, measure  # noqa: E402
from memflax import progress_log  # noqa: E402
from memflax.metric_writer import MetricWriter  # noqa: E402
from memflax.train import train_and_evaluate  # noqa: E402

MODELS = ('rnn', 'lstm', 'gru', 'transformer', 'kv_memory_transformer', 'ntm', 'sparse_ntm', 'dnc')


def train_budget(config_path: str, budget: int) -> dict:
  config = load_config(config_path)
  config.num_train_steps = max(1, budget // config.batch_size)
  config.eval_every_steps = config.num_train_steps
  config.checkpoint_every_steps = config.num_train_steps
  config.log_every_steps = max(1, config.num_train_steps // 10)
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    final = [r for r in MetricWriter(workdir).read() if 'eval_bit_errors_per_seq' in r][-1]
  return dict(train_batch_size=config.batch_size, train_steps=config.num_train_steps,
              train_sequences=config.num_train_steps * config.batch_size,
              bit_errors_per_seq=final['eval_bit_errors_per_seq'], train_wall_s=wall)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default=','.join(MODELS))
  parser.add_argument('--budget', type=int, default=50_000, help='training sequences per model')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  rows = []
  names = args.models.split(',')
  for name in progress_log.bar(names, len(names), 'models'):
    path = f'configs/{name}_copy.py'
    speed = measure(path, 32, steps=20, warmup=5, repeats=args.repeats)
    row = dict(model=name, num_params=speed['num_params'], ms_per_step_b32=speed['ms_per_step'],
               compile_s=speed['compile_s'], **train_budget(path, args.budget))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
          flush=True)
    rows.append(row)
    out.write_text(json.dumps(rows, indent=2) + '\n')


if __name__ == '__main__':
  main()
