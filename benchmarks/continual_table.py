"""Continual learning on a task sequence (default: the NTM's copy → repeat copy →
associative recall): ACC / BWT / FWT / forgetting per strategy, mean and spread over seeds.

  python benchmarks/continual_table.py --out benchmarks/results/continual_table.json
  python benchmarks/continual_table.py --config=configs/cl_lm_corpora.py \
      --out benchmarks/results/continual_lm.json --jobs 2
  python benchmarks/continual_table.py --out /tmp/cl.json --strategies naive,replay --seeds 0 --quick
  python benchmarks/continual_table.py --out /tmp/cl.json --jobs 12   # one process per run

Each run is --config (default `configs/cl_ntm_tasks.py`) with
`--config.continual.strategy=S --config.seed=K` (the config's defaults otherwise), trained
by `train.py` in its own workdir under --workdir (kept, so a rerun resumes instead of
starting over; the snapshots are there for eval.py --snapshot). Runs are separate
processes, `--jobs` at a time, each pinned to one core with taskset when --jobs > 1 (so
runs do not compete for each other's cores), seed by seed. The JSON holds every run's
continual.json and, per strategy, the mean and the standard deviation over seeds; the same
table is printed as Markdown. `--quick` uses the tiny variant (a smoke test of the script,
not a result).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from memflax import progress_log  # noqa: E402  (no jax: the measured runs are children)
STRATEGIES = ('naive', 'l2', 'ewc', 'replay')
KEYS = ('ACC', 'BWT', 'FWT', 'forgetting')


DEFAULT_CONFIG = 'configs/cl_ntm_tasks.py'


def command(strategy: str, seed: int, workdir: Path, quick: bool, extra: list[str],
            config: str = DEFAULT_CONFIG) -> list[str]:
  config = config + (':tiny' if quick else '')
  return [sys.executable, str(REPO / 'train.py'), f'--config={config}', f'--workdir={workdir}',
          f'--config.continual.strategy={strategy}', f'--config.seed={seed}', *extra]


def summarise(runs: list[dict]) -> dict:
  """{strategy: {key: {'mean', 'std', 'values'}}} over the finished runs."""
  table = {}
  for strategy in dict.fromkeys(r['strategy'] for r in runs):
    mine = [r for r in runs if r['strategy'] == strategy]
    table[strategy] = {'seeds': [r['seed'] for r in mine]}
    for key in KEYS + ('train_time_s',):
      values = [float(r['result'][key]) if key != 'train_time_s' else
                float(sum(r['result'][key])) for r in mine]
      table[strategy][key] = dict(mean=float(np.mean(values)), std=float(np.std(values)),
                                  values=values)
  return table


def markdown(table: dict) -> str:
  lines = ['| strategy | ACC | BWT | FWT | forgetting | train time / run |',
           '|---|---|---|---|---|---|']
  for strategy, row in table.items():
    cells = [f'{row[k]["mean"]:.3f} ± {row[k]["std"]:.3f}' for k in KEYS]
    lines.append(f'| {strategy} | ' + ' | '.join(cells) +
                 f' | {row["train_time_s"]["mean"] / 60:.1f} min |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True, help='JSON file to write')
  parser.add_argument('--config', default=DEFAULT_CONFIG,
                      help='the continual config every run trains (a file under configs/)')
  parser.add_argument('--workdir', default='runs/continual_table',
                      help='where the runs live (one sub-directory per strategy and seed)')
  parser.add_argument('--strategies', default=','.join(STRATEGIES))
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--jobs', type=int, default=1, help='runs at a time')
  parser.add_argument('--quick', action='store_true', help='tiny variant: a smoke test')
  parser.add_argument('--set', action='append', default=[],
                      help='extra --config.FIELD=VALUE for every run (repeatable)')
  args = parser.parse_args()
  strategies = [s for s in args.strategies.split(',') if s]
  unknown = sorted(set(strategies) - set(STRATEGIES))
  if unknown:
    parser.error(f'unknown strategies {unknown}; known: {list(STRATEGIES)}')
  seeds = [int(s) for s in args.seeds.split(',') if s]
  # The runs start in the repository root: a path given from elsewhere is made absolute.
  config = Path(args.config) if Path(args.config).is_file() else REPO / args.config
  if not config.is_file():
    parser.error(f'--config: no file {args.config}')
  root = Path(args.workdir).absolute()
  env = dict(os.environ)
  cores = sorted(os.sched_getaffinity(0))
  pin = args.jobs > 1 and shutil.which('taskset') is not None
  slot = 0
  # Seed by seed, so a sweep cut short still holds every strategy of the seeds it finished.
  pending = [(s, k) for k in seeds for s in strategies]
  running, runs, started = {}, [], time.time()
  # A bar over finished runs (on a terminal only); each finished run advances it by one.
  finished = iter(progress_log.bar(range(len(pending)), len(pending), 'runs'))
  next(finished, None)
  while pending or running:
    while pending and len(running) < args.jobs:
      strategy, seed = pending.pop(0)
      workdir = root / f'{strategy}_seed{seed}'
      log = (root / f'{strategy}_seed{seed}.log')
      log.parent.mkdir(parents=True, exist_ok=True)
      extra = [f'--config.{s}' if not s.startswith('--') else s for s in args.set]
      argv = command(strategy, seed, workdir, args.quick, extra, str(config.resolve()))
      if pin:  # one core per run: the runs themselves are the parallelism
        argv = ['taskset', '-c', str(cores[slot % len(cores)])] + argv
        slot += 1
      running[(strategy, seed)] = (subprocess.Popen(
          argv, cwd=REPO, env=env,
          stdout=log.open('w'), stderr=subprocess.STDOUT), workdir)
    time.sleep(1.0)
    for (strategy, seed), (proc, workdir) in list(running.items()):
      if proc.poll() is None:
        continue
      del running[(strategy, seed)]
      next(finished, None)
      if proc.returncode:
        print(f'{strategy} seed {seed}: failed (exit {proc.returncode}); see {workdir}.log',
              file=sys.stderr)
        continue
      result = json.loads((workdir / 'continual.json').read_text())
      runs.append(dict(strategy=strategy, seed=seed, result=result))
      print(f'{strategy} seed {seed}: ACC {result["ACC"]:.3f} BWT {result["BWT"]:+.3f} '
            f'forgetting {result["forgetting"]:.3f} ({time.time() - started:.0f}s)', flush=True)
      table = summarise(sorted(runs, key=lambda r: (strategies.index(r['strategy']), r['seed'])))
      Path(args.out).parent.mkdir(parents=True, exist_ok=True)
      Path(args.out).write_text(json.dumps(dict(
          config=args.config, sequence=' -> '.join(result['tasks']), quick=args.quick,
          overrides=args.set, table=table, runs=runs), indent=2) + '\n')
  if runs:
    print(markdown(summarise(sorted(runs, key=lambda r: (strategies.index(r['strategy']),
                                                        r['seed'])))))
    print(f'wrote {args.out}')
  return 0 if len(runs) == len(strategies) * len(seeds) else 1


if __name__ == '__main__':
  sys.exit(main())
