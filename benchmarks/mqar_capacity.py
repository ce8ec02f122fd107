"""MQAR accuracy against the number of key-value pairs, per model: the capacity curve of
the Zoology and DeltaNet papers, on this machine.

  python benchmarks/mqar_capacity.py --out benchmarks/results/mqar_capacity.json
  python benchmarks/mqar_capacity.py --models deltanet --pairs 8 --steps 200 --out /tmp/m.json

Each run is `configs/<model>_mqar.py` with K pairs in sequences of T = 4K tokens (the
shortest that holds K pairs and K queries) over a vocabulary of max(64, 8K) tokens, trained
`--steps` steps of the config's own batch and optimizer through the one training loop
(train_and_evaluate) in a temporary workdir, then scored on held-out batches at K. The
recurrent memories keep the same state size for every K (d_model 64: per layer 4 heads of
16 × 16 for the delta rules, 128 × 20 for the NTM); the Transformer's key/value cache grows
with T. Rows {"model", "pairs", "seq_length", "vocab_size", "accuracy", "final_loss",
"steps", "wall_s", "state_floats"} are written as each run finishes, and a plot of accuracy
against K is drawn next to the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memflax import progress_log  # noqa: E402
from memflax.config_presets import compose  # noqa: E402
from memflax.metric_writer import MetricWriter  # noqa: E402
from memflax.train import train_and_evaluate  # noqa: E402
from train_throughput import parse_overrides  # noqa: E402  (this folder)

MODELS = ('transformer', 'deltanet', 'gated_deltanet', 'titans', 'ntm', 'lstm')
PAIRS = (8, 16, 32, 64)


def config_for(model: str, pairs: int, steps: int, seed: int, overrides: list[str] = ()):
  """The run's config; `overrides` ('model.positions=rotary', 'task.min_pairs=1', ...)
  are applied last, as train.py's --config.KEY=VALUE would."""
  config = compose(model, 'mqar', num_train_steps=steps, seed=seed)
  config.task.update(num_pairs=pairs, seq_length=4 * pairs, vocab_size=max(64, 8 * pairs))
  config.update(eval_every_steps=steps, checkpoint_every_steps=steps,
                log_every_steps=max(steps // 20, 1))
  config.eval.lengths = (pairs,)
  config.eval.num_sequences = 512
  config.log.update(tensorboard=False)
  if 'max_len' in config.model:
    config.model.max_len = max(config.model.max_len, 4 * pairs)
  for key, value in parse_overrides(list(overrides)).items():
    *path, leaf = key.split('.')
    node = config
    for part in path:
      node = node[part]
    node[leaf] = value
  return config


def train_once(config, per_query: bool = False) -> dict:
  """Trains `config` in a temporary workdir -> {'accuracy' (last eval), 'final_loss',
  'wall_s'} (+ 'per_query'); the values are None where the run logged none. A run that
  trains on a mix of pair counts (task.min_pairs, or a growing curriculum) is scored at
  exactly task.num_pairs pairs, on fresh sequences, instead of on its own mix."""
  pairs = config.task.num_pairs
  mixed = config.task.min_pairs > 0 or config.curriculum.kind == 'grow'
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    rows = MetricWriter(workdir).read()
    extra = dict(per_query=per_query_accuracy(workdir, pairs=pairs)) if per_query else {}
    if mixed:
      correct = _answers(workdir, 512, pairs)[0]
      extra.update(accuracy_on_mix=next((r['eval_accuracy'] for r in reversed(rows)
                                         if 'eval_accuracy' in r), None),
                   curriculum_levels=[r['curriculum_level'] for r in rows
                                      if 'curriculum_level' in r][::5])
  evals = [r['eval_accuracy'] for r in rows if 'eval_accuracy' in r]
  losses = [r['loss'] for r in rows if 'loss' in r]
  accuracy = float(correct.mean()) if mixed else (evals[-1] if evals else None)
  return dict(accuracy=accuracy, final_loss=losses[-1] if losses else None,
              wall_s=round(wall, 1), **extra)


def _answers(workdir: str, num_sequences: int, pairs: int):
  """The trained model of `workdir` on fresh sequences of exactly `pairs` pairs ->
  (correct [B, K] bool, query j asks pair j; positions [B, K] of those queries)."""
  import jax
  import numpy as np
  from memflax import evaluate
  trainer, params, _ = evaluate.restore(workdir)
  batch = jax.device_get(trainer.task.make_batch(jax.random.PRNGKey(12345), num_sequences,
                                                 num_pairs=pairs))
  logits = trainer.apply_model(params, trainer.empty_memory(num_sequences), batch['inputs'])[0]
  rows = np.arange(num_sequences)[:, None]
  correct = np.asarray(logits).argmax(-1)[rows, batch['positions']] == batch['values']
  return correct, batch['positions']


def per_query_accuracy(workdir: str, num_sequences: int = 512, pairs: int | None = None) -> dict:
  """Which queries the trained model answers, on fresh sequences (of the task's
  num_pairs pairs unless `pairs` says): accuracy by the asked pair's place in the prefix
  ('by_pair') and by the query's place among the queries ('by_query_order'), each [K]. A
  model that looks keys up scores flat; one that learned where pairs sit scores high only
  at some places."""
  if pairs is None:
    from memflax import evaluate
    pairs = evaluate.restore(workdir)[0].task.num_pairs
  return split_by_query(*_answers(workdir, num_sequences, pairs))


def split_by_query(correct, positions) -> dict:
  """correct [B,K] bool (query j asks pair j), positions [B,K] of those queries ->
  mean accuracy per pair and per place in the order the queries come, each [K]."""
  import numpy as np
  in_order = np.take_along_axis(correct, np.argsort(positions, axis=1), axis=1)
  return dict(by_pair=correct.mean(0).round(3).tolist(),
              by_query_order=in_order.mean(0).round(3).tolist())


def run(model: str, pairs: int, steps: int, seed: int, per_query: bool = False,
        overrides: list[str] = ()) -> dict:
  config = config_for(model, pairs, steps, seed, overrides)
  result = train_once(config, per_query)
  return dict(model=model, pairs=pairs, seq_length=config.task.seq_length,
              vocab_size=config.task.vocab_size, seed=seed, steps=steps,
              batch_size=config.batch_size, **(dict(overrides=list(overrides)) if overrides
                                               else {}), **result)


def plot(rows: list[dict], path: Path) -> None:
  from memflax import viz
  curves = {}
  for r in rows:
    curves.setdefault(r['model'], []).append((r['pairs'], r['accuracy']))
  viz.plot_curves({m: sorted(c) for m, c in curves.items()}, path.with_suffix('.png'),
                  xlabel='key-value pairs K (T = 4K)', ylabel='MQAR accuracy',
                  title='MQAR capacity at a fixed state size')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default=','.join(MODELS))
  parser.add_argument('--pairs', default=','.join(map(str, PAIRS)))
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--per-query', action='store_true',
                      help='also score each run query by query (which pairs it answers)')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='config override for every run, e.g. model.positions=rotary or '
                           'task.min_pairs=1 (repeatable)')
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  rows = []
  jobs = [(m, int(k)) for k in args.pairs.split(',') for m in args.models.split(',')]
  for model, pairs in progress_log.bar(jobs, len(jobs), 'runs'):
    row = run(model, pairs, args.steps, args.seed, args.per_query, args.set)
    print(json.dumps(row), flush=True)
    rows.append(row)
    out.write_text(json.dumps(dict(command=' '.join(sys.argv), rows=rows), indent=1) + '\n')
    plot(rows, out)


if __name__ == '__main__':
  main()
