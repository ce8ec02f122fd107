"""The fault-tolerance tests' trial log: with MEMFLAX_FAULT_REPORT=<path> set, each fault
trial appends one JSON line to that file, e.g.

  {"fault": "sigkill", "moment": "mid_save", "result": "bit-exact", ...}

(`fault`, `moment` and `result` always; anything else is detail). A script reading the
file aggregates the trials for the README; without the variable nothing is written.
"""

from __future__ import annotations

import fcntl
import json
import os


def append(trials: list[dict]) -> None:
  path = os.environ.get('MEMFLAX_FAULT_REPORT')
  if not path or not trials:
    return
  for trial in trials:
    assert {'fault', 'moment', 'result'} <= trial.keys(), trial
  text = ''.join(json.dumps(t, sort_keys=True, default=str) + '\n' for t in trials)
  with open(path, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # several test processes may append at once
    f.write(text)
    f.flush()


def record(fault: str, result: str, moment: str = '', **details) -> None:
  """One trial: `moment` says when or where the fault hit (a step, a file, a mode)."""
  append([{'fault': fault, 'moment': moment, 'result': result, **details}])
