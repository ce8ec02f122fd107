"""The fault-tolerance suite as one table: which fault, how many trials, what happened.

  python benchmarks/fault_suite.py --out benchmarks/results/fault_suite.json
  python benchmarks/fault_suite.py --out /tmp/faults.json --only sigterm,disk   # a subset
  python benchmarks/fault_suite.py --out F.json --from-run trials.jsonl junit.xml

The last form aggregates a pytest run made elsewhere (e.g. the full suite, run with
MEMFLAX_FAULT_REPORT=trials.jsonl and --junitxml=junit.xml) instead of running the tests.

Runs the fault tests (tests/test_fault_*.py, the resume tests included) with pytest,
each trial appending one JSON line to MEMFLAX_FAULT_REPORT (tests/fault_report.py), and
writes per fault: the trials, how each ended, and whether every test of that fault
passed. Prints the README's "What survives what" table as Markdown. A failing test is
reported, not hidden: the script exits non-zero.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = {  # short name -> test file
    'sigkill': 'tests/test_fault_sigkill.py',
    'sigterm': 'tests/test_fault_sigterm.py',
    'disk': 'tests/test_fault_disk.py',
    'corruption': 'tests/test_fault_corruption.py',
    'nonfinite': 'tests/test_fault_nonfinite.py',
    'multiprocess': 'tests/test_fault_multiprocess.py',
    'device_count': 'tests/test_fault_device_count.py',
    'fuzz': 'tests/test_fault_fuzz.py',
}


def run_tests(files: list[str], report: Path) -> tuple[int, Path, float]:
  """(pytest exit code, its junit XML, seconds)."""
  junit = report.with_suffix('.xml')
  env = dict(os.environ, MEMFLAX_FAULT_REPORT=str(report),
             PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  start = time.time()
  code = subprocess.call([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                          '-W', 'ignore', f'--junitxml={junit}', *files], cwd=REPO, env=env)
  return code, junit, time.time() - start


def test_outcomes(junit: Path, files: list[str]) -> dict[str, dict[str, int]]:
  """{test file: {passed/failed/skipped: count}} for the given files, from junit XML."""
  outcomes = collections.defaultdict(collections.Counter)
  for case in ET.parse(junit).getroot().iter('testcase'):
    module = case.get('classname', '').split('.')
    name = next((f for f in files if Path(f).stem in module), None)
    if name is None:
      continue
    kind = 'failed' if case.find('failure') is not None or case.find('error') is not None \
        else 'skipped' if case.find('skipped') is not None else 'passed'
    outcomes[name][kind] += 1
  return {k: dict(v) for k, v in sorted(outcomes.items())}


def summarise(trials: list[dict]) -> dict[str, dict]:
  by_fault = collections.defaultdict(list)
  for t in trials:
    by_fault[t['fault']].append(t)
  return {fault: dict(trials=len(rows),
                      results=dict(collections.Counter(r['result'] for r in rows)),
                      moments=sorted({str(r['moment']) for r in rows}))
          for fault, rows in sorted(by_fault.items())}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True, help='JSON file to write')
  parser.add_argument('--only', default='', help=f'comma-separated subset of {sorted(FILES)}')
  parser.add_argument('--from-run', nargs=2, metavar=('TRIALS_JSONL', 'JUNIT_XML'),
                      help='aggregate an existing run instead of running the tests')
  args = parser.parse_args()
  names = [n for n in args.only.split(',') if n] or list(FILES)
  unknown = sorted(set(names) - set(FILES))
  if unknown:
    parser.error(f'unknown --only {unknown}; known: {sorted(FILES)}')
  files = [FILES[n] for n in names]
  if args.from_run:
    report, junit = (Path(p) for p in args.from_run)
    code, seconds = None, None
    trials = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    tests = test_outcomes(junit, files)
    code = int(any(c.get('failed') for c in tests.values()))
  else:
    with tempfile.TemporaryDirectory() as tmp:
      report = Path(tmp) / 'trials.jsonl'
      report.touch()
      code, junit, seconds = run_tests(files, report)
      trials = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
      tests = test_outcomes(junit, files)
  result = dict(command=' '.join(sys.argv), pytest_exit_code=code,
                seconds=None if seconds is None else round(seconds, 1),
                tests=tests, faults=summarise(trials), trials=trials)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + '\n')
  print('| fault | trials | results |\n|---|---|---|')
  for fault, row in result['faults'].items():
    results = ', '.join(f'{n}× {r}' for r, n in row['results'].items())
    print(f'| {fault} | {row["trials"]} | {results} |')
  print('| tests | ' + ', '.join(f'{Path(f).name}: {c}' for f, c in tests.items()) + ' |')
  took = '' if seconds is None else f', {seconds / 60:.1f} min'
  print(f'wrote {out}; failed tests: {"yes" if code else "none"}{took}')
  return code


if __name__ == '__main__':
  sys.exit(main())
