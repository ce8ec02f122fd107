"""Recall accuracy against the number of items stored: a differentiable neural dictionary
(memflax/models/dnd.py) against the NTM and the LSTM, on MQAR.

  python benchmarks/dnd_recall.py                   # ~20 min on 2 CPU cores
  python benchmarks/dnd_recall.py --quick           # a smoke run, ~2 min
  python benchmarks/dnd_recall.py --models dnd --items 500,1000 --steps 100

Each run is `configs/<model>_mqar.py` with K key-value pairs in sequences of T = 4K tokens
(the shortest that holds K pairs and K queries) over a vocabulary of 2K + 64 tokens (K
distinct keys and K distinct values must fit in its two halves), trained `--steps` steps of
`--batch-size` sequences with the config's own optimizer through the one training loop
(train_and_evaluate) in a temporary workdir, then scored on `--eval-sequences` held-out
sequences at K. Chance is about 1/K (a value of the K in the sequence). The DND stores
every step (its capacity grows with T); the NTM (128 × 20) and the LSTM (3 × 256) keep a
fixed state. Rows {"model", "pairs", "seq_length", "vocab_size", "accuracy",
"final_loss", "steps", "batch_size", "seed", "wall_s"} are written to `--out` as each run
finishes, with the command, and accuracy against K is plotted next to it (.png).

Time goes to the NTM and the LSTM, whose steps are sequential in T: on 2 busy cores at
batch 16, T = 200 (K = 50) took ~0.4 s per step for the NTM and ~0.8 s for the 3 × 256 LSTM,
so K = 500 (T = 2000) costs ~10 and ~30 min per baseline run of 150 steps; the DND's whole
parallel read is a few matmuls and a top-k (seconds per run), so it can go far beyond:
`--models dnd --items 500,1000`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memflax import progress_log  # noqa: E402
from memflax.config_presets import compose  # noqa: E402
from benchmarks.mqar_capacity import train_once  # noqa: E402

MODELS = ('dnd', 'ntm', 'lstm')
ITEMS = (25, 50, 100, 200)
RESULTS = Path(__file__).resolve().parent / 'results'


def config_for(model: str, pairs: int, steps: int, batch_size: int, eval_sequences: int,
               seed: int):
  config = compose(model, 'mqar', num_train_steps=steps, seed=seed, batch_size=batch_size)
  length = 4 * pairs
  config.task.update(num_pairs=pairs, seq_length=length, vocab_size=2 * pairs + 64)
  config.update(eval_every_steps=steps, checkpoint_every_steps=steps,
                log_every_steps=max(steps // 10, 1))
  config.eval.lengths = (pairs,)
  config.eval.num_sequences = eval_sequences
  config.log.update(tensorboard=False, progress=False)
  if model == 'dnd' and length > 512:
    config.model.query_block = 256  # distances [B, 256, T] at a time, not [B, T, T]
  return config


def run(model: str, pairs: int, steps: int, batch_size: int, eval_sequences: int,
        seed: int) -> dict:
  config = config_for(model, pairs, steps, batch_size, eval_sequences, seed)
  result = train_once(config)
  return dict(model=model, pairs=pairs, seq_length=config.task.seq_length,
              vocab_size=config.task.vocab_size, accuracy=result['accuracy'],
              final_loss=result['final_loss'], steps=steps, batch_size=batch_size,
              learning_rate=config.learning_rate, eval_sequences=eval_sequences, seed=seed,
              wall_s=result['wall_s'])


def plot(rows: list[dict], path: Path) -> None:
  from memflax import viz
  curves = {}
  for r in rows:
    curves.setdefault(r['model'], []).append((r['pairs'], r['accuracy']))
  steps = sorted({r['steps'] for r in rows})
  viz.plot_curves({m: sorted(c) for m, c in curves.items()}, path.with_suffix('.png'),
                  xlabel='key-value pairs stored K (T = 4K)', ylabel='MQAR accuracy',
                  title=f'Recall against items stored ({"/".join(map(str, steps))} steps)')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default=','.join(MODELS))
  parser.add_argument('--items', default=','.join(map(str, ITEMS)),
                      help='key-value pairs K per sequence, comma-separated')
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--batch-size', type=int, default=16)
  parser.add_argument('--eval-sequences', type=int, default=128)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--quick', action='store_true',
                      help='smoke run: K = 8, 16 and 30 steps, unless given explicitly')
  parser.add_argument('--out', default=None,
                      help='JSON path (default benchmarks/results/dnd_recall[_quick].json)')
  parser.add_argument('--plot-only', default='',
                      help='comma-separated result JSONs: draw all their rows into --out\'s '
                           '.png, train nothing')
  args = parser.parse_args()
  if args.plot_only:
    rows = [r for f in args.plot_only.split(',') for r in json.loads(Path(f).read_text())['rows']]
    plot(rows, Path(args.out))
    print(f'wrote {Path(args.out).with_suffix(".png")} from {len(rows)} rows')
    return
  if args.quick:
    given = ' '.join(sys.argv)
    args.items = args.items if '--items' in given else '8,16'
    args.steps = args.steps if '--steps' in given else 30
    args.eval_sequences = args.eval_sequences if '--eval-sequences' in given else 64
  out = Path(args.out) if args.out else RESULTS / f'dnd_recall{"_quick" if args.quick else ""}.json'
  out.parent.mkdir(parents=True, exist_ok=True)
  rows = []
  start = time.perf_counter()
  jobs = [(m, int(k)) for k in args.items.split(',') for m in args.models.split(',')]
  for model, pairs in progress_log.bar(jobs, len(jobs), 'runs'):
    row = run(model, pairs, args.steps, args.batch_size, args.eval_sequences, args.seed)
    print(json.dumps(row), flush=True)
    rows.append(row)
    out.write_text(json.dumps(dict(
        command=' '.join(['python'] + sys.argv), task='mqar', steps=args.steps,
        batch_size=args.batch_size, eval_sequences=args.eval_sequences, seeds=[args.seed],
        wall_s=round(time.perf_counter() - start, 1), rows=rows), indent=1) + '\n')
    plot(rows, out)
  print(f'wrote {out} and {out.with_suffix(".png")}')


if __name__ == '__main__':
  main()
