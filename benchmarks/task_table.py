"""The NTM paper's task set plus MQAR, per model and seed: sequences until the task's
threshold is first met, and the final error.

  python benchmarks/task_table.py --out benchmarks/results/task_table.json
  python benchmarks/task_table.py --out /tmp/t.json --models ntm --tasks copy --seeds 0 --quick
  python benchmarks/task_table.py --merge a.json,b.json --out merged.json   # no training
  python benchmarks/task_table.py --models ntm --tasks copy --seeds 1 --from-workdir=runs/x \
      --out runs/x.json   # the row of a finished train.py run of configs/ntm_copy.py, seed 1

Each run is `configs/<model>_<task>.py` with `--config.seed=S`, trained through the one
training loop (train_and_evaluate) in a temporary workdir; the held-out evaluation every
`eval_every_steps` gives the learning curve. Rows are written as each run finishes, so a
long sweep keeps what it has; a learning-curve PNG per task is drawn next to the JSON.
`--quick` uses the tiny variants (a smoke test of the script, not a result).
`--merge` joins the rows of runs made apart (say one seed per core; a later file's row
replaces an earlier one for the same model, task and seed), redraws the plots and prints
one Markdown table per model, as in the README. `--from-workdir` makes the row of a
`train.py` run of the preset already finished (checked against the preset and seed), so
a run trained by hand, or resumed after an interruption, which a temporary workdir
cannot be, joins the table.
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
from memflax import tasks as tasks_lib  # noqa: E402
from memflax.config_presets import compose  # noqa: E402
from memflax.metric_writer import MetricWriter  # noqa: E402
from memflax.train import train_and_evaluate  # noqa: E402

TASKS = ('copy', 'repeat_copy', 'associative_recall', 'priority_sort', 'ngrams', 'mqar')
MODELS = ('ntm', 'lstm', 'dnc', 'transformer', 'kv_memory_transformer')
# (metric, threshold, how): the targets of the issue. N-grams: within 10 % of the exact
# Bayes-optimal cost of the held-out sequences. Priority sort has no reference cost in the
# paper beyond its curves; we count < 1 bit error per sequence as solved.
THRESHOLDS = {
    'copy': ('bit_errors_per_seq', 0.1), 'repeat_copy': ('bit_errors_per_seq', 1.0),
    'associative_recall': ('bit_errors_per_seq', 1.0),
    'priority_sort': ('bit_errors_per_seq', 1.0), 'mqar': ('accuracy', 0.99),
    'ngrams': ('cost_bits_per_seq', None),  # 1.1 × the Bayes-optimal cost, computed per run
}


def has_config(model: str, task: str) -> bool:
  return (Path(__file__).resolve().parents[1] / 'configs' / f'{model}_{task}.py').exists()


def held_out(config):
  """(task, the held-out batch the training loop evaluates on), as numpy arrays."""
  import jax
  from memflax.train import Trainer
  trainer = Trainer(config)
  batch = trainer.task.make_batch(trainer.eval_key, config.eval.num_sequences)
  return trainer.task, jax.device_get(batch)


def ngram_threshold(config) -> float:
  """1.1 × the exact Bayes-optimal cost on the same held-out sequences the loop evaluates."""
  task, batch = held_out(config)
  return 1.1 * float(task.bayes_optimal_cost(batch))


def priority_sort_analysis(config, workdir: str) -> dict:
  """Priority sort, on the held-out sequences the loop evaluates: `bucket_sort_floor`, the
  bit errors per sequence of an ideal bucket sort into the model's memory_size slots (for
  a model with slots), and `errors_by_priority_gap`, the trained model's bit errors per
  target vector by the gap between the vector's priority and the nearest other one
  (priority_sort.Task); for a model with read and write weightings also
  `target_slot_read_fraction` (how often an output step reads the slot its target was
  written to) and `write_slot_order` (whether slots follow priority or arrival)."""
  import jax
  from memflax import evaluate
  task, batch = held_out(config)
  trainer, params, _ = evaluate.restore(workdir)
  logits, traces, _ = trainer.apply_model(params, None, batch['inputs'])
  logits, traces = jax.device_get((logits, traces))
  out = {}
  if 'memory_size' in config.model:
    out['bucket_sort_floor'] = task.bucket_sort_bit_errors(batch, config.model.memory_size)
  out['errors_by_priority_gap'] = task.errors_by_priority_gap(batch, logits)
  if {'read_weights', 'write_weights'} <= set(traces or {}):
    out['target_slot_read_fraction'] = task.target_slot_read_fraction(
        batch, traces['read_weights'], traces['write_weights'])
    out['write_slot_order'] = task.write_slot_order(batch, traces['write_weights'])
  return out


def run(model: str, task: str, seed: int, quick: bool) -> dict:
  config = compose(model, task, 'tiny' if quick else '')
  config.seed = seed
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    train_and_evaluate(config, workdir)
    return row(config, model, task, seed, workdir, time.perf_counter() - start)


def row(config, model: str, task: str, seed: int, workdir: str, wall: float) -> dict:
  """The table's row for a finished run of `config` in `workdir` that took `wall` seconds."""
  metric, threshold = THRESHOLDS[task]
  if threshold is None:
    threshold = ngram_threshold(config)
  better = tasks_lib.build(config.task).higher_is_better
  curve = [(r['step'] * config.batch_size, r[f'eval_{metric}'])
           for r in MetricWriter(workdir).read() if f'eval_{metric}' in r]
  extra = priority_sort_analysis(config, workdir) if task == 'priority_sort' else {}
  met = [seqs for seqs, v in curve if (v >= threshold if better else v <= threshold)]
  return dict(model=model, task=task, seed=seed, metric=metric, threshold=threshold,
              sequences_to_threshold=met[0] if met else None, final=curve[-1][1],
              train_sequences=config.num_train_steps * config.batch_size, wall_s=wall,
              curve=curve, **extra)


def row_from_workdir(model: str, task: str, seed: int, workdir: str,
                     quick: bool = False) -> dict:
  """The row of a finished `train.py` run of the preset `configs/<model>_<task>.py` with
  `--config.seed=seed` (its `:tiny` variant if `quick`; the same training as `run`), so a
  run made by hand joins the table. Its wall_s is the compilation plus the training
  loop's clock (train.py's compile_s and train_time_s; the few seconds of start-up before
  them are not counted). ValueError when the workdir's stored config differs from that
  preset or the run did not finish."""
  from memflax import config_defaults, evaluate
  config = compose(model, task, 'tiny' if quick else '')
  config.seed = seed
  stored = evaluate.stored_config(workdir)
  if stored is None:
    raise ValueError(f'{workdir}: no checkpoint of a train.py run')
  # Through JSON, as the workdir stores it: tuples become lists.
  stored, expected = (json.loads(json.dumps(config_defaults.complete(c).to_dict()))
                      for c in (stored, config))
  differ = sorted(_differences(stored, expected))
  if differ:
    raise ValueError(f'{workdir} was not trained with configs/{model}_{task}.py'
                     f'{":tiny" if quick else ""} and seed '
                     f'{seed}: {", ".join(differ)} differ')
  records = MetricWriter(workdir).read()
  done = [r for r in records if r.get('step') == config.num_train_steps and 'train_time_s' in r]
  if not done:
    raise ValueError(f'{workdir}: the run has not reached step {config.num_train_steps}')
  compile_s = sum(r['compile_s'] for r in records if 'compile_s' in r)
  return row(config, model, task, seed, workdir, compile_s + done[-1]['train_time_s'])


def _differences(a: dict, b: dict, prefix: str = '') -> list[str]:
  keys = set(a) | set(b)
  out = []
  for key in keys:
    if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
      out += _differences(a[key], b[key], f'{prefix}{key}.')
    elif a.get(key) != b.get(key):
      out.append(prefix + key)
  return out


def plot(rows: list[dict], path: Path) -> None:
  from memflax import viz
  for task in sorted({r['task'] for r in rows}):
    viz.plot_curves({f"{r['model']} seed {r['seed']}": r['curve'] for r in rows
                     if r['task'] == task}, path.with_name(f'{path.stem}_{task}.png'),
                    xlabel='training sequences', ylabel=THRESHOLDS[task][0], title=task)


def merge(paths: list[Path]) -> list[dict]:
  """Rows of several JSON files, one per (model, task, seed), the last file's winning;
  ordered by model, then task as in TASKS, then seed."""
  rows = {}
  for path in paths:
    for row in json.loads(Path(path).read_text()):
      rows[row['model'], row['task'], row['seed']] = row
  order = lambda key: (key[0], TASKS.index(key[1]), key[2])
  return [rows[key] for key in sorted(rows, key=order)]


def _number(value: float) -> str:
  if value == 0:
    return '0'
  if abs(value) >= 100:
    return f'{value:.1f}'
  return f'{value:#.3g}' if abs(value) >= 1 else f'{value:.3f}'


def _minutes(seconds: float) -> str:
  return f'{int(seconds // 60)}:{int(seconds % 60):02d}'


def _target(task: str, rows: list[dict]) -> str:
  metric, threshold = THRESHOLDS[task]
  if threshold is None:  # N-grams: 1.1 × the optimum of each seed's held-out sequences
    optima = sorted({_number(r['threshold'] / 1.1) for r in rows}, key=float)
    return f'≤ 1.1 × optimum {"–".join(optima[::max(len(optima) - 1, 1)])}'
  return f'accuracy ≥ {threshold:g}' if task == 'mqar' else f'< {threshold:g}'


def markdown_tables(rows: list[dict], seeds=(0, 1, 2)) -> str:
  """One table per model: task (target) | budget | sequences to threshold per seed |
  final per seed | wall per run ('—' threshold not met, '·' seed not run)."""
  out = []
  for model in dict.fromkeys(r['model'] for r in rows):
    out += [f'{model}:', '',
            '| task (target) | budget | sequences to threshold, seeds '
            + '/'.join(map(str, seeds)) + ' | final, seeds ' + '/'.join(map(str, seeds))
            + ' | wall per run |', '|---|---|---|---|---|']
    mine = [r for r in rows if r['model'] == model]
    for task in [t for t in TASKS if any(r['task'] == t for r in mine)]:
      by_seed = {r['seed']: r for r in mine if r['task'] == task}
      reached = ' / '.join('·' if s not in by_seed else
                           '—' if by_seed[s]['sequences_to_threshold'] is None else
                           f"{by_seed[s]['sequences_to_threshold']:,}" for s in seeds)
      final = ' / '.join(_number(by_seed[s]['final']) if s in by_seed else '·' for s in seeds)
      walls = sorted(r['wall_s'] for r in by_seed.values())
      wall = _minutes(walls[0]) + ('' if len(walls) == 1 else f'–{_minutes(walls[-1])}')
      budget = f"{max(r['train_sequences'] for r in by_seed.values()):,} seq"
      name = {'ngrams': 'N-grams', 'mqar': 'MQAR'}.get(task, task.replace('_', ' '))
      out.append(f'| {name} ({_target(task, list(by_seed.values()))}) '
                 f'| {budget} | {reached} | {final} | {wall} |')
    out.append('')
  return '\n'.join(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default=','.join(MODELS))
  parser.add_argument('--tasks', default=','.join(TASKS))
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--quick', action='store_true', help='tiny variants: a smoke test')
  parser.add_argument('--merge', help='comma-separated row JSONs to join into --out')
  parser.add_argument('--from-workdir', help='no training: the row of a finished train.py '
                      'run of the preset for the one model, task and seed given')
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  if args.from_workdir:
    from memflax import cli_errors
    if ',' in args.models + args.tasks + args.seeds:
      cli_errors.fail('--from-workdir takes one --models, one --tasks and one --seeds')
    try:
      rows = [row_from_workdir(args.models, args.tasks, int(args.seeds), args.from_workdir,
                               args.quick)]
    except (ValueError, FileNotFoundError) as e:  # also a corrupt or vanished checkpoint
      cli_errors.fail(e)
    out.write_text(json.dumps(rows, indent=2) + '\n')
    plot(rows, out)
    print(markdown_tables(rows))
    return
  if args.merge:
    rows = merge([Path(p) for p in args.merge.split(',')])
    out.write_text(json.dumps(rows, indent=2) + '\n')
    plot(rows, out)
    print(markdown_tables(rows))
    return
  rows = []
  jobs = [(task, model, int(seed)) for task in args.tasks.split(',')
          for model in args.models.split(',') if has_config(model, task)
          for seed in args.seeds.split(',')]
  for task, model, seed in progress_log.bar(jobs, len(jobs), 'runs'):
    row = run(model, task, seed, args.quick)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                      for k, v in row.items() if k != 'curve'}), flush=True)
    rows.append(row)
    out.write_text(json.dumps(rows, indent=2) + '\n')
    plot(rows, out)


if __name__ == '__main__':
  from memflax import cpu_cores
  cpu_cores.use_every_core()  # as train.py does, so the runs are train.py's
  main()
