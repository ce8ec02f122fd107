"""The README gallery, drawn from real runs.

  python benchmarks/figures.py --runs runs/figures --out benchmarks/results/figures
  python benchmarks/figures.py --runs /tmp/fq --out /tmp/fq/out --quick   # seconds: a smoke test

Trains `configs/<model>_copy.py` for each of --models in `<runs>/<model>_copy` (a finished
workdir is reused: training resumes and finds nothing left to do), then draws:

  copy_learning_curves.png   held-out bit errors per sequence against training sequences
  ntm_weightings.png         the trained NTM's read and write weightings on one length-20 copy
  ntm_memory.png             its memory over that sequence (row norms; M_t at six steps)
  ntm_sequence.png           input, target and output of that sequence
  copy_length_generalisation.png  bit errors per sequence from length 1 to 80, per model
  continual_naive.png, continual_replay.png  accuracy matrices of the NTM task sequence,
                             from benchmarks/results/continual_table.json (its runs, seed 0)

A run's own numbers (final error, training time) go to `<out>/figures.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memflax import evaluate, progress_log, viz  # noqa: E402
from memflax.config_presets import compose  # noqa: E402
from memflax.train import train_and_evaluate  # noqa: E402

CONTINUAL = Path(__file__).resolve().parent / 'results' / 'continual_table.json'


def train(model: str, runs: Path, quick: bool) -> tuple[Path, dict]:
  config = compose(model, 'copy', 'tiny' if quick else '')
  workdir = runs / f'{model}_copy'
  start = time.perf_counter()
  train_and_evaluate(config, workdir)
  return workdir, dict(batch_size=config.batch_size, wall_s=time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--models', default='ntm,lstm', help='comma-separated, each with a '
                      'configs/<model>_copy.py (dnc takes ~15 min more on 2 CPU cores)')
  parser.add_argument('--runs', default='runs/figures', help='where the runs are (re)used')
  parser.add_argument('--out', default='benchmarks/results/figures')
  parser.add_argument('--quick', action='store_true', help='tiny variants: a smoke test')
  parser.add_argument('--profile_sequences', type=int, default=500)
  args = parser.parse_args()
  runs, out = Path(args.runs), Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  models = args.models.split(',')

  workdirs, facts = {}, {}
  for model in progress_log.bar(models, len(models), 'training'):
    workdirs[model], facts[model] = train(model, runs, args.quick)
  written = [viz.plot_learning_curves(
      workdirs, out / 'copy_learning_curves.png',
      batch_size={m: facts[m]['batch_size'] for m in models},
      title='copy, lengths 1..20: held-out bit errors per sequence', log_y=False)]

  profiles = {}
  for model in progress_log.bar(models, len(models), 'evaluating'):
    trainer, params, step = evaluate.restore(workdirs[model])
    profiles[model] = evaluate.memory_profile(trainer, params, 80, args.profile_sequences,
                                              points=9)
    facts[model].update(step=step, profile=profiles[model])
    if model == 'ntm':
      trace = evaluate.trace_one(trainer, params, 20)
      title = f'NTM on copy (step {step}), one length-20 sequence'
      written += [viz.plot_weightings(trace, out / 'ntm_weightings.png', title),
                  viz.plot_memory(trace['memory'], out / 'ntm_memory.png', title),
                  viz.plot_sequence(trace, out / 'ntm_sequence.png', title)]
  written.append(viz.plot_profiles(profiles, out / 'copy_length_generalisation.png',
                                   'copy: trained on lengths 1..20'))

  if CONTINUAL.exists():
    table = json.loads(CONTINUAL.read_text())
    for run in table['runs']:
      if run['seed'] == 0 and run['strategy'] in ('naive', 'replay'):
        written.append(viz.plot_accuracy_matrix(run['result'],
                                                out / f'continual_{run["strategy"]}.png'))
  (out / 'figures.json').write_text(json.dumps(facts, indent=2) + '\n')
  for path in written:
    print(f'wrote {path}')


if __name__ == '__main__':
  main()
