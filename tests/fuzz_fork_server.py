"""Runs `python train.py ARGS` many times cheaply, for tests/test_fault_fuzz.py.

A fresh `python train.py` spends ~3 s importing jax, flax, orbax and TFDS before it
looks at its flags. This server imports them once (without starting a jax backend),
then for every request forks a child that runs train.py exactly as the interpreter
would (`runpy.run_path(train.py, run_name='__main__')`, sys.argv set, its own stdout
and stderr files, its exit status returned). An uncaught exception in the child is
printed as the interpreter prints it ('Traceback (most recent call last): ...').

Protocol: one JSON object per line on stdin, {"args": [...], "cwd": DIR, "env": {...},
"timeout": seconds}; one JSON object per line on stdout, {"returncode", "stdout",
"stderr", "timed_out"}. A child still running at its timeout is killed (SIGKILL).
What this cannot see: output printed while those modules are imported; the tests
that run the real `python train.py` (conftest.run_cli) cover that.
"""

from __future__ import annotations

import io
import json
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, 'train.py')


def _preimport() -> None:
  sys.path.insert(0, REPO)
  import absl.app  # noqa: F401
  import absl.flags  # noqa: F401
  import ml_collections.config_flags  # noqa: F401

  import memflax.catalogue  # noqa: F401
  import memflax.cli_errors  # noqa: F401
  import memflax.compilation_cache  # noqa: F401
  import memflax.continual.runner  # noqa: F401
  import memflax.data.text_builder  # noqa: F401
  import memflax.train  # noqa: F401
  from jax._src import xla_bridge
  # A backend started here would leave its threads behind in every child (fork).
  assert not xla_bridge._backends, 'a jax backend started while importing'


def _child(request: dict, out_fd: int, err_fd: int) -> None:
  """Never returns: runs train.py and exits with its status."""
  code = 1
  try:
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    sys.stdout = io.TextIOWrapper(open(1, 'wb', closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(open(2, 'wb', closefd=False), line_buffering=True)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.chdir(request['cwd'])
    for key, value in request.get('env', {}).items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
    sys.argv = [TRAIN, *request['args']]
    try:
      runpy.run_path(TRAIN, run_name='__main__')
      code = 0
    except SystemExit as e:  # what the interpreter does with sys.exit(x)
      if e.code is None:
        code = 0
      elif isinstance(e.code, int):
        code = e.code
      else:
        print(e.code, file=sys.stderr)
        code = 1
    except BaseException:  # what the interpreter does with an uncaught exception
      traceback.print_exc()
      code = 1
    sys.stdout.flush()
    sys.stderr.flush()
  finally:
    os._exit(code)


def _serve_one(request: dict) -> dict:
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    pid = os.fork()
    if pid == 0:
      _child(request, out.fileno(), err.fileno())
    deadline = time.monotonic() + float(request.get('timeout', 120))
    timed_out = False
    while True:
      done, status = os.waitpid(pid, os.WNOHANG)
      if done:
        break
      if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        timed_out = True
        break
      time.sleep(0.005)
    out.seek(0)
    err.seek(0)
    return {'returncode': os.waitstatus_to_exitcode(status), 'timed_out': timed_out,
            'stdout': out.read().decode('utf-8', 'replace'),
            'stderr': err.read().decode('utf-8', 'replace')}


def main() -> None:
  _preimport()
  protocol = os.fdopen(os.dup(1), 'w')
  os.dup2(2, 1)  # stray prints of this process must not corrupt the protocol
  protocol.write(json.dumps({'ready': True}) + '\n')
  protocol.flush()
  for line in sys.stdin:
    if line.strip():
      protocol.write(json.dumps(_serve_one(json.loads(line))) + '\n')
      protocol.flush()


if __name__ == '__main__':
  main()
