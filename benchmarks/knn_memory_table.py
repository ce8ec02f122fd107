"""Validation bits per byte of the Memorizing Transformer with and without its kNN memory,
and as a function of the memory's size, on the byte-level corpus.

  python benchmarks/knn_memory_table.py --out benchmarks/results/knn_memory_table.json
  python benchmarks/knn_memory_table.py --steps 100 --eval_windows 64 --out /tmp/k.json  # smoke

Two trainings of configs/knn_transformer_lm.py, identical but for model.memory_size
(same parameters, same batches, same seed): the trained size (default 2,048 entries per
head and lane) and 0 (local attention only). Each is scored on the validation documents
read lane by lane from an empty store (all of them: every byte once). Then the model
trained with memory is scored again with stores of every size in --eval_sizes (its
parameters do not depend on the size), on the first validation documents that make up
--eval_windows segments, so the sizes compare on the same bytes. Rows are written as each
measurement finishes; the training wall time is reported with each trained model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'configs'))
from memflax import evaluate, progress_log  # noqa: E402
from memflax.metric_writer import MetricWriter  # noqa: E402
from memflax.train import Trainer, train_and_evaluate  # noqa: E402
import knn_transformer_lm  # noqa: E402


def config_for(memory_size: int, steps: int | None, seed: int):
  config = knn_transformer_lm.get_config()
  config.model.memory_size = memory_size
  config.seed = seed
  if steps is not None:
    config.update(num_train_steps=steps, lr_warmup_steps=min(config.lr_warmup_steps, steps // 10))
  config.update(eval_every_steps=config.num_train_steps,
                checkpoint_every_steps=config.num_train_steps)
  config.log.update(tensorboard=False)
  return config


def train(memory_size: int, steps: int | None, seed: int, root: Path) -> tuple[dict, Path]:
  config = config_for(memory_size, steps, seed)
  workdir = root / f'memory_{memory_size}'
  start = time.perf_counter()
  train_and_evaluate(config, workdir)
  wall = time.perf_counter() - start
  rows = MetricWriter(workdir).read()
  compile_s = next((r['compile_s'] for r in rows if 'compile_s' in r), None)
  trainer, params, _ = evaluate.restore(workdir)
  full = trainer.validation_metrics(params)  # every validation document, every byte once
  return dict(kind='trained', memory_size=memory_size, steps=config.num_train_steps,
              batch_size=config.batch_size, seed=seed,
              val_bits_per_byte=float(full['bits_per_byte']),
              val_segments=int(full['num_windows']), train_wall_s=round(wall, 1),
              compile_s=compile_s), workdir


def sweep(workdir: Path, sizes: list[int], windows: int) -> list[dict]:
  """The model of `workdir` scored with stores of each size on the same documents."""
  trainer, params, step = evaluate.restore(workdir)
  rows = []
  for size in sizes:
    config = trainer.config.copy_and_resolve_references()
    config.model.memory_size = size
    config.model.top_k = min(config.model.top_k, size) if size else config.model.top_k
    scorer = Trainer(config, trainer.data)
    start = time.perf_counter()
    metrics = scorer.validation_metrics(params, max_windows=windows)
    rows.append(dict(kind='eval_size', trained_memory_size=int(trainer.config.model.memory_size),
                     memory_size=size, val_bits_per_byte=float(metrics['bits_per_byte']),
                     val_segments=int(metrics['num_windows']), step=step,
                     eval_wall_s=round(time.perf_counter() - start, 1)))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--memory_size', type=int, default=None,
                      help='trained size (default: the config\'s)')
  parser.add_argument('--steps', type=int, default=None, help='default: the config\'s')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--eval_sizes', default='0,1024,8192,65536')
  parser.add_argument('--eval_windows', type=int, default=1024,
                      help='segments of validation documents for the size sweep')
  parser.add_argument('--workdirs', default='runs/knn_memory_table',
                      help='where the two trained runs are kept (reused when complete)')
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  out, root = Path(args.out), Path(args.workdirs)
  out.parent.mkdir(parents=True, exist_ok=True)
  trained = args.memory_size or knn_transformer_lm.get_config().model.memory_size
  sizes = [int(s) for s in args.eval_sizes.split(',')]
  rows = []

  def write():
    out.write_text(json.dumps(dict(command=' '.join(sys.argv), rows=rows), indent=1) + '\n')

  jobs = [('train', trained), ('train', 0), ('sweep', trained)]
  workdirs = {}
  for kind, size in progress_log.bar(jobs, len(jobs), 'measurements'):
    if kind == 'train':
      row, workdirs[size] = train(size, args.steps, args.seed, root)
      new = [row]
    else:
      new = sweep(workdirs[size], sizes, args.eval_windows)
    for row in new:
      print(json.dumps(row), flush=True)
    rows.extend(new)
    write()


if __name__ == '__main__':
  main()
