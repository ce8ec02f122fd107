"""Every command the README shows runs as a user types it, from a fresh directory.

The README's ```bash blocks are run line by line, literally, with the working
directory a new temporary folder that holds the repository's entry points and
configs (so relative workdirs like `runs/ntm_copy` resolve there, as on a fresh
clone). Only step-count and size overrides are appended, to keep the suite fast;
the 8-device command keeps its full model size and runs past the number of steps
XLA queues per device, where it used to deadlock. Lines that launch several
processes of one run (`--process_id=`) start together. ```python blocks run as
scripts in the same folder, except those that start `# file: PATH`: files the reader is
told to save, written there first.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

README = (REPO / 'README.md').read_text()
# The set-up and test commands are what CI itself runs (.ci/run), not re-run here.
NOT_RERUN = ('pip install -r requirements.txt', 'python -m pytest')
FEW_STEPS = ['--config.num_train_steps=12', '--config.log_every_steps=4',
             '--config.eval_every_steps=6', '--config.checkpoint_every_steps=6',
             '--config.eval.num_sequences=64']
# XLA CPU queues up to 32 steps per device; a multi-device run must get past that.
MULTI_DEVICE_STEPS = ['--config.num_train_steps=120', '--config.log_every_steps=40',
                      '--config.eval_every_steps=60', '--config.checkpoint_every_steps=60',
                      '--config.eval.num_sequences=64']


def _logical_lines(block: str) -> list[str]:
  joined = re.sub(r'\\\n\s*', ' ', block)
  return [line.strip() for line in joined.splitlines()
          if line.strip() and not line.strip().startswith('#')]


def bash_blocks() -> list[list[str]]:
  return [_logical_lines(b) for b in re.findall(r'```bash\n(.*?)```', README, re.S)]


def runnable_blocks() -> list[list[str]]:
  """The bash blocks' lines this test runs (set-up and test commands left to CI)."""
  blocks = [[l for l in block if not l.startswith(NOT_RERUN)] for block in bash_blocks()]
  return [block for block in blocks if block]


def python_blocks() -> list[str]:
  """The ```python blocks run as scripts (not those that are files to save)."""
  return [b for b in re.findall(r'```python\n(.*?)```', README, re.S) if not FILE.match(b)]


# A ```python block whose first line is `# file: PATH` is a file the reader saves (the
# new-model guide); it is written to PATH in the fresh directory before any command runs.
FILE = re.compile(r'# file: (\S+)\n')


def file_blocks() -> dict[str, str]:
  return {FILE.match(b).group(1): b for b in re.findall(r'```python\n(.*?)```', README, re.S)
          if FILE.match(b)}


def _split(line: str) -> tuple[dict, list[str]]:
  """(environment assignments, argv) of one shell line without its comment."""
  words = shlex.split(line, comments=True)
  env = {}
  while words and re.fullmatch(r'[A-Z_][A-Z0-9_]*=.*', words[0]):
    key, value = words.pop(0).split('=', 1)
    env[key] = value
  return env, words


def _with_overrides(env: dict, argv: list[str]) -> list[str]:
  if argv[:2] == ['python', 'train.py'] and any(a.startswith('--config=') for a in argv):
    multi = 'device_count' in env.get('XLA_FLAGS', '')
    return argv + (MULTI_DEVICE_STEPS if multi else FEW_STEPS)
  if argv[:2] == ['python', 'eval.py']:
    return argv + ['--num_sequences=64']
  return argv


@pytest.fixture(scope='module')
def fresh_dir(tmp_path_factory):
  """A working directory like a fresh clone's top level, without any earlier runs."""
  root = tmp_path_factory.mktemp('readme')
  for entry in REPO.iterdir():
    if not entry.name.startswith('.') and entry.name not in ('runs',):
      (root / entry.name).symlink_to(entry)
  for path, text in file_blocks().items():
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)
  return root


def _env(extra: dict) -> dict:
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(extra)
  return env


def _python(argv: list[str]) -> list[str]:
  """`python` and the console scripts it installed, from the interpreter running the tests."""
  if argv and argv[0] == 'python':
    return [sys.executable, *argv[1:]]
  if argv and (Path(sys.executable).parent / argv[0]).is_file():
    return [str(Path(sys.executable).parent / argv[0]), *argv[1:]]
  return argv


def _check_server(line: str, argv: list[str], cwd: Path) -> None:
  """A command that serves (tensorboard): it must come up and list the runs there are."""
  logdir = cwd / next(a.split('=', 1)[1] if '=' in a else argv[argv.index(a) + 1]
                      for a in argv if a.startswith('--logdir'))
  expected = {str(p.parent.relative_to(logdir)) for p in logdir.rglob('events.out.tfevents.*')}
  proc = subprocess.Popen(_python(argv), cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.monotonic() + 120
    while True:
      assert proc.poll() is None, f'{line} exited:\n{proc.stdout.read()[-3000:]}'
      try:
        with urllib.request.urlopen('http://localhost:6006/data/runs', timeout=5) as response:
          runs = set(json.loads(response.read()))
        if expected <= runs:
          break
      except (OSError, ValueError):
        pass
      assert time.monotonic() < deadline, f'{line}: runs {expected} not served'
      time.sleep(1)
  finally:
    proc.terminate()
    proc.wait(timeout=30)


def _check(proc: subprocess.CompletedProcess, line: str) -> None:
  assert proc.returncode == 0, f'README command failed: {line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
  assert 'Traceback' not in proc.stderr, f'{line}\n{proc.stderr[-3000:]}'


def test_readme_test_command_is_what_ci_runs():
  setup = [line for block in bash_blocks() for line in block if line.startswith(NOT_RERUN)]
  install = [_split(l)[1] for l in setup if l.startswith('pip')]
  tests = [_split(l)[1] for l in setup if l.startswith('python -m pytest')]
  assert install == [['pip', 'install', '-r', 'requirements.txt']]
  ci = (REPO / '.ci' / 'run').read_text().splitlines()
  assert shlex.join(tests[0]) in ci, 'the README test command must be the one .ci/run runs'


@pytest.mark.parametrize('index', range(len(runnable_blocks())))
def test_readme_bash_block_runs_as_written(fresh_dir, index):
  lines = runnable_blocks()[index]
  together = [l for l in lines if '--process_id=' in l]
  for line in lines:
    if line in together:
      continue
    env, argv = _split(line)
    if argv[0] == 'tensorboard':
      _check_server(line, argv, fresh_dir)
      continue
    proc = subprocess.run(_python(_with_overrides(env, argv)), cwd=fresh_dir, env=_env(env),
                          capture_output=True, text=True, timeout=600)
    _check(proc, line)
    if argv[:2] == ['python', 'train.py'] and '--list' in argv:
      assert 'ntm_copy.py' in proc.stdout, proc.stdout
    elif argv[:2] == ['python', 'train.py']:
      assert proc.stdout.strip().splitlines()[-1].startswith('done: '), proc.stdout
      workdir = fresh_dir / next(a.split('=', 1)[1] for a in argv if a.startswith('--workdir='))
      if 'configs/cl_' in line:  # a task sequence: step checkpoints live per task
        assert (workdir / 'continual.json').is_file() and (workdir / 'snapshots').is_dir()
      else:
        assert (workdir / 'checkpoints').is_dir() and (workdir / 'metrics.jsonl').is_file()
  if together:
    procs = []
    for line in together:
      env, argv = _split(line)
      procs.append((line, subprocess.Popen(_python(_with_overrides(env, argv)), cwd=fresh_dir,
                                           env=_env(env), stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)))
    for line, proc in procs:
      out, err = proc.communicate(timeout=600)
      _check(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), line)


@pytest.mark.parametrize('index', range(len(python_blocks())))
def test_readme_python_block_runs_as_written(fresh_dir, index):
  proc = subprocess.run([sys.executable, '-'], input=python_blocks()[index], cwd=fresh_dir,
                        env=_env({}), capture_output=True, text=True, timeout=600)
  _check(proc, python_blocks()[index])
