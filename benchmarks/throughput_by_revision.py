"""Before/after figures per change: the same throughput benchmark at several git revisions,
interleaved so that a shared machine's drift hits every revision alike.

  python benchmarks/throughput_by_revision.py --revs a6efb6e,HEAD~2,HEAD~1,HEAD \
      --out benchmarks/results/ntm_throughput_by_revision.json

Each revision is checked out into a temporary git worktree; each round runs
benchmarks/train_throughput.py of every revision once (in a fresh process, on that
revision's own code and configs) and the figures are the medians over `--rounds`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from memflax import progress_log  # noqa: E402  (no jax: the measured runs are children)


def run_one(tree: Path, config: str, batch_size: int, steps: int) -> dict:
  with tempfile.NamedTemporaryFile(suffix='.json') as out:
    subprocess.run([sys.executable, 'benchmarks/train_throughput.py', f'--config={config}',
                    f'--batch_sizes={batch_size}', f'--steps={steps}', '--repeats=3',
                    f'--out={out.name}'], cwd=tree, check=True, capture_output=True)
    return json.loads(Path(out.name).read_text())[0]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--revs', required=True, help='comma-separated git revisions, oldest first')
  parser.add_argument('--config', default='configs/ntm_copy.py')
  parser.add_argument('--batch_sizes', default='1,8,32')
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  revs = args.revs.split(',')
  with tempfile.TemporaryDirectory() as root:
    trees = {}
    for rev in revs:
      sha = subprocess.run(['git', 'rev-parse', '--short', rev], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.strip()
      trees[rev] = (sha, Path(root) / sha)
      subprocess.run(['git', 'worktree', 'add', '--detach', '-f', str(trees[rev][1]), sha],
                     cwd=REPO, check=True, capture_output=True)
    try:
      samples = {(rev, b): [] for rev in revs for b in args.batch_sizes.split(',')}
      jobs = [(round_index, batch_size, rev) for round_index in range(args.rounds)
              for batch_size in args.batch_sizes.split(',') for rev in revs]
      for round_index, batch_size, rev in progress_log.bar(jobs, len(jobs), 'runs'):
        row = run_one(trees[rev][1], args.config, int(batch_size), args.steps)
        samples[(rev, batch_size)].append(row)
        print(f'round {round_index}: {rev} ({trees[rev][0]}) batch {batch_size}: '
              f'{row["sequences_per_sec"]:.0f} sequences/s, compile {row["compile_s"]:.1f} s',
              flush=True)
    finally:
      for sha, tree in trees.values():
        subprocess.run(['git', 'worktree', 'remove', '--force', str(tree)], cwd=REPO,
                       capture_output=True)
  rows = []
  for (rev, batch_size), runs in samples.items():
    rate = statistics.median(r['sequences_per_sec'] for r in runs)
    rows.append(dict(rev=rev, commit=trees[rev][0], config=args.config,
                     batch_size=int(batch_size), sequences_per_sec=rate,
                     ms_per_step=statistics.median(r['ms_per_step'] for r in runs),
                     compile_s=statistics.median(r['compile_s'] for r in runs),
                     sequences_per_sec_all=[round(r['sequences_per_sec'], 1) for r in runs],
                     device=runs[0].get('device', runs[0].get('backend')),
                     rounds=args.rounds))
  base = {r['batch_size']: r['sequences_per_sec'] for r in rows if r['rev'] == revs[0]}
  for row in rows:
    row['speedup_vs_first'] = row['sequences_per_sec'] / base[row['batch_size']]
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(rows, indent=2) + '\n')
  for row in rows:
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()
                      if k != 'sequences_per_sec_all'}))


if __name__ == '__main__':
  main()
