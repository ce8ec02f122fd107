"""SIGKILL at ten moments drawn from a seeded schedule; every resumed run ends bit for bit
where the uninterrupted run ends (fault-tolerance issue, point 1).

The schedule. `draw_schedule(SEED)` draws ten kill moments with random.Random(SEED):
five for a plain run (configs/ntm_copy.py:tiny, 300 steps, a checkpoint every 20) and
five for a continual run (configs/cl_ntm_tasks.py:tiny, replay, 3 tasks of 40 steps, a
checkpoint every 10). Each moment is observed from outside, on the workdir's files and
the run's stdout, and fires SIGKILL the moment it holds:

  plain       startup             a drawn delay after the process starts, before its
                                  compile_s row (importing, restoring or compiling)
              after_rows          after k (drawn) new metric rows of this process
              mid_async_save      while a step checkpoint's '.orbax-checkpoint-tmp'
                                  directory, written by this process, exists
              after_checkpoint    as soon as a new step checkpoint is committed
              mid_eval            after an evaluation step's training row, before its
                                  eval row (the evaluation is running)
  continual   cl_startup          as plain startup, in whichever task the run is at
              cl_mid_async_save   a step checkpoint of task >= t being written
              cl_after_checkpoint a new step checkpoint of task >= t (mid-task)
              cl_task_end         task >= t finished training, its snapshot not yet
                                  begun (the accuracy row is being measured)
              cl_mid_snapshot_write  snapshot >= t being written (its temporary dir)
              cl_task_switch      a drawn delay after snapshot >= t appeared, before the
                                  next task's first step checkpoint

The plain run gets each of its five kinds once, in a drawn order with drawn delays and
row counts (so mid_async_save always); the continual run always gets a cl_task_switch and
a cl_mid_snapshot_write (their task drawn) and three more moments drawn from the rest,
put in the order of the sequence (each may fire in task t or later), cl_startup at a
drawn place. SEED = 1212 draws:

  plain:     startup (1.03 s), after_rows (k=5), after_checkpoint, mid_eval, mid_async_save
  continual: cl_mid_async_save (task>=0), cl_task_end (task>=0), cl_task_switch (after
             task>=0, 0.01 s), cl_after_checkpoint (task>=1), cl_mid_snapshot_write (>=1)

Did a kill land at its moment? The watcher fires as soon as the condition holds, but the
run goes on for the microseconds until the signal lands. So after every kill the test
checks the evidence the moment left on disk: the return code is -SIGKILL, a temporary
directory is still there (the write never finished), no compile_s row / eval row /
snapshot was written, and so on. A kill whose evidence is missing is recorded as
'missed' (it still was a real SIGKILL, and the chain goes on from it) and the same moment
is retried in the next process, at most MAX_ATTEMPTS times; a moment never hit fails the
test, and so does a run that ends before its moment could fire (never counted as a hit).

Each restart is the same command; the run then completes, and its final train state
(params, optimizer state, step, RNG), its metric rows and, for the continual run,
continual.json, every snapshot's parameters and every replay buffer are compared bit for
bit with an uninterrupted run of the same command. Each restart's header must say it
resumed from the newest committed checkpoint.

MEMFLAX_FAULT_REPORT=<path>: one JSON line per scheduled moment (tests/fault_report.py).

The plain and the continual chain run side by side (one thread each; a 2-core machine
runs both processes at once).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import fault_report
from conftest import REPO, cli_env
from configs import cl_ntm_tasks
from memflax import config_defaults
from memflax.checkpoint import Checkpointer, stored_config
from memflax.continual import config as cl_config
from memflax.continual import runner, snapshots
from memflax.train import Trainer

SEED = 1212
MAX_ATTEMPTS = 3
PROCESS_TIMEOUT = 300.0
POLL_S = 0.002
TMP = '.orbax-checkpoint-tmp'

PLAIN_STEPS, PLAIN_CHECKPOINT, PLAIN_LOG, PLAIN_EVAL = 300, 20, 10, 50
PLAIN = ['--config=configs/ntm_copy.py:tiny', f'--config.num_train_steps={PLAIN_STEPS}',
         f'--config.checkpoint_every_steps={PLAIN_CHECKPOINT}',
         f'--config.log_every_steps={PLAIN_LOG}', f'--config.eval_every_steps={PLAIN_EVAL}',
         '--config.eval.num_sequences=256', '--config.log.tensorboard=false']

CL_STEPS = 40
CONTINUAL = ['--config=configs/cl_ntm_tasks.py:tiny', '--config.continual.strategy=replay',
             f'--config.num_train_steps={CL_STEPS}', '--config.checkpoint_every_steps=10',
             '--config.log_every_steps=10', f'--config.eval_every_steps={CL_STEPS}',
             '--config.eval.num_sequences=64', '--config.continual.replay_buffer_size=32',
             '--config.log.tensorboard=false']
CL_KEYS = cl_config.task_keys(cl_ntm_tasks.get_config('tiny'))
CL_NAMES = [snapshots.snapshot_name(i, k) for i, k in enumerate(CL_KEYS)]

PLAIN_MENU = ('startup', 'after_rows', 'mid_async_save', 'after_checkpoint', 'mid_eval')
# Continual moments in the order a sequence passes them within a task.
CL_PHASES = ('cl_mid_async_save', 'cl_after_checkpoint', 'cl_task_end',
             'cl_mid_snapshot_write', 'cl_task_switch')


@dataclasses.dataclass(frozen=True)
class Moment:
  run: str                   # 'plain' | 'continual'
  kind: str
  task: int | None = None    # continual: the first task index it may fire in
  k: int | None = None       # after_rows: how many new metric rows
  delay: float | None = None  # startup kinds, cl_task_switch: seconds to wait

  def label(self) -> str:
    extra = [f'task>={self.task}' if self.task is not None else '',
             f'k={self.k}' if self.k is not None else '',
             f'delay={self.delay:.2f}s' if self.delay is not None else '']
    extra = ', '.join(e for e in extra if e)
    return f'{self.run}/{self.kind}' + (f'({extra})' if extra else '')


def draw_schedule(seed: int) -> tuple[list[Moment], list[Moment]]:
  """(plain moments, continual moments), in the order they are fired."""
  rng = random.Random(seed)

  def plain(kind):
    if kind == 'startup':
      return Moment('plain', kind, delay=round(rng.uniform(0.5, 4.0), 2))
    if kind == 'after_rows':
      return Moment('plain', kind, k=rng.randint(1, 5))
    return Moment('plain', kind)

  kinds = list(PLAIN_MENU)  # each once (mid_async_save among them), in a drawn order
  rng.shuffle(kinds)
  plain_moments = [plain(k) for k in kinds]

  menu = [('cl_mid_async_save', t) for t in range(3)] + \
         [('cl_after_checkpoint', t) for t in range(3)] + \
         [('cl_task_end', t) for t in range(3)] + \
         [('cl_mid_snapshot_write', t) for t in range(3)] + \
         [('cl_task_switch', t) for t in range(2)]
  switch = rng.choice([m for m in menu if m[0] == 'cl_task_switch'])
  write = rng.choice([m for m in menu if m[0] == 'cl_mid_snapshot_write'])
  rest = rng.sample([m for m in menu if m not in (switch, write)] + [('cl_startup', None)], 3)
  positional = sorted([m for m in [switch, write, *rest] if m[0] != 'cl_startup'],
                      key=lambda m: (m[1], CL_PHASES.index(m[0])))
  if ('cl_startup', None) in rest:
    positional.insert(rng.randrange(len(positional) + 1), ('cl_startup', None))
  continual_moments = []
  for kind, task in positional:
    delay = None
    if kind == 'cl_startup':
      delay = round(rng.uniform(0.5, 4.0), 2)
    elif kind == 'cl_task_switch':
      delay = round(rng.uniform(0.0, 1.5), 2)
    continual_moments.append(Moment('continual', kind, task=task, delay=delay))
  return plain_moments, continual_moments


# ------------------------------------------------------------------ Observing a run
_HEADER = re.compile(r'^memflax: \S+ on (\S+), \d+ device\(s\), \d+ process\(es\), (.*)$')


class Proc:
  """One `train.py` process; its stdout (and stderr) collected line by line."""

  def __init__(self, args: list[str], workdir: Path):
    self.spawn_ns = time.time_ns()
    self.start = time.monotonic()
    self.killed_after = None
    self.popen = subprocess.Popen(
        [sys.executable, str(REPO / 'train.py'), *args, f'--workdir={workdir}'], cwd=REPO,
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    self.lines: list[str] = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.popen.stdout:
      self.lines.append(line.rstrip('\n'))

  def elapsed(self) -> float:
    return time.monotonic() - self.start

  def headers(self) -> list[tuple[int, str, str]]:
    """(line index, task name, where) of each run_loop header printed so far."""
    found = []
    for i, line in enumerate(list(self.lines)):
      m = _HEADER.match(line)
      if m:
        found.append((i, m.group(1), m.group(2)))
    return found

  def start_step(self, task: str | None = None) -> int | None:
    """The step the newest header (of `task`) says this process started from."""
    heads = [h for h in self.headers() if task is None or h[1] == task]
    if not heads:
      return None
    m = re.match(r'resumed from step (\d+)', heads[-1][2])
    return int(m.group(1)) if m else 0

  def kill(self) -> None:
    self.killed_after = self.elapsed()
    self.popen.send_signal(signal.SIGKILL)
    self.finish()

  def finish(self, timeout: float | None = None) -> int:
    try:
      self.popen.wait(timeout)
    except subprocess.TimeoutExpired:
      self.ensure_dead()
      raise ChainError(f'the run took over {timeout:.0f} s:\n{self.tail()}') from None
    self._reader.join(10)
    return self.popen.returncode

  def ensure_dead(self) -> None:
    """Never leave a run behind (a failed check, a timeout)."""
    if self.popen.poll() is None:
      self.popen.kill()
      self.popen.wait()

  def tail(self, n: int = 25) -> str:
    return '\n'.join(self.lines[-n:])


class Rows:
  """A metrics.jsonl, parsed again only when the file changed."""

  def __init__(self, path: Path):
    self.path, self._key, self._rows = path, None, []

  def get(self) -> list[dict]:
    try:
      st = os.stat(self.path)
    except FileNotFoundError:
      return []
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    if key != self._key:
      rows = []
      try:
        text = self.path.read_text()
      except FileNotFoundError:
        return []
      for line in text.splitlines():
        try:
          rows.append(json.loads(line))
        except ValueError:
          pass  # a row being written
      self._key, self._rows = key, rows
    return self._rows


def _committed(directory: Path) -> list[int]:
  try:
    return sorted(int(e.name) for e in os.scandir(directory) if e.name.isdigit() and e.is_dir())
  except FileNotFoundError:
    return []


def _tmp_names(directory: Path) -> list[str]:
  try:
    return sorted(e.name for e in os.scandir(directory) if TMP in e.name)
  except FileNotFoundError:
    return []


def _has_file_since(directory: Path, since_ns: int, depth: int = 2) -> bool:
  """A regular file modified at or after since_ns, at most `depth` levels down."""
  try:
    entries = list(os.scandir(directory))
  except (FileNotFoundError, NotADirectoryError):
    return False
  for e in entries:
    try:
      if e.is_file(follow_symlinks=False) and e.stat().st_mtime_ns >= since_ns:
        return True
      if depth > 1 and e.is_dir(follow_symlinks=False) and \
          _has_file_since(Path(e.path), since_ns, depth - 1):
        return True
    except FileNotFoundError:
      continue
  return False


class TmpTracker:
  """Temporary orbax directories written by *this* process. A temporary directory left
  by an earlier killed process is stale until its name is seen gone (orbax's cleanup
  deletes it) or it holds a file written since this process started (the same name,
  deleted and made again by this process's write in between two looks)."""

  def __init__(self, directory: Path, since_ns: int):
    self.directory, self.since = directory, since_ns
    self.stale = set(_tmp_names(directory))

  def current(self) -> list[str]:
    names = _tmp_names(self.directory)
    self.stale &= set(names)
    return [n for n in names if n not in self.stale
            or _has_file_since(self.directory / n, self.since)]


def _is_eval_row(row: dict) -> bool:
  return any(k.startswith('eval_') for k in row)


# ------------------------------------------------------------------ Moments
def plain_probe(m: Moment, proc: Proc, workdir: Path):
  """(ready, evidence) for a plain-run moment: ready() -> fire now?; evidence() after
  the kill -> (landed at the moment?, what was seen)."""
  ckpts = workdir / 'checkpoints'
  rows = Rows(workdir / 'metrics.jsonl')
  tmps = TmpTracker(ckpts, proc.spawn_ns)
  compile_rows = sum('compile_s' in r for r in rows.get())
  seen = {}

  if m.kind == 'startup':
    def ready():
      return proc.elapsed() >= m.delay

    def evidence():
      added = sum('compile_s' in r for r in rows.get()) - compile_rows
      where = 'compiling (header printed)' if proc.headers() else 'importing or restoring'
      return added == 0, f'{proc.killed_after:.2f} s after start, {where}' + (
          '' if added == 0 else '; but it had finished compiling')

  elif m.kind == 'after_rows':
    def new_rows():
      s = proc.start_step()
      return [] if s is None else [r for r in rows.get() if 'loss' in r and r['step'] > s]

    def ready():
      return len(new_rows()) >= m.k

    def evidence():
      got = new_rows()
      finished = PLAIN_STEPS in _committed(ckpts)
      return len(got) >= m.k and not finished, (
          f'after {len(got)} new metric rows (from step {proc.start_step()} to '
          f'{got[-1]["step"] if got else "-"})' +
          ('; but the run had finished' if finished else ''))

  elif m.kind == 'mid_async_save':
    def ready():
      names = tmps.current()
      if names:
        seen['tmp'] = names[0]
      return bool(names)

    def evidence():
      name = seen['tmp']
      left = name in tmps.current()
      return left, f'while step {name.split(".")[0]} was being written' + (
          f' ({name} left behind)' if left else '; but the save had finished')

  elif m.kind == 'after_checkpoint':
    def ready():
      s = proc.start_step()
      new = [x for x in _committed(ckpts) if s is not None and x > s]
      if new:
        seen['step'] = max(new)
      return bool(new)

    def evidence():
      step = seen['step']
      return step in _committed(ckpts) and step < PLAIN_STEPS, (
          f'right after step {step} was committed (started from step {proc.start_step()})')

  elif m.kind == 'mid_eval':
    def pending():
      s = proc.start_step()
      got = rows.get()
      if s is None or not got:
        return None
      last = got[-1]
      step = last['step']
      if 'loss' in last and step > s and (step % PLAIN_EVAL == 0 or step == PLAIN_STEPS) \
          and not any(r['step'] == step and _is_eval_row(r) for r in got):
        return step
      return None

    def ready():
      step = pending()
      if step is not None:
        seen['step'] = step
      return step is not None

    def evidence():
      step = seen['step']
      got = rows.get()
      trained = any(r['step'] == step and 'loss' in r for r in got)
      evaluated = any(r['step'] == step and _is_eval_row(r) for r in got)
      return trained and not evaluated, f'during the evaluation at step {step}' + (
          '; but its eval row was written' if evaluated else '')
  else:
    raise ValueError(m.kind)
  return ready, evidence


def _current_task(workdir: Path) -> int:
  return len(snapshots.list_snapshots(workdir))


def _task_dir(workdir: Path, index: int) -> Path:
  return workdir / runner.TASKS_DIR / CL_NAMES[index]


def continual_probe(m: Moment, proc: Proc, workdir: Path):
  """As plain_probe, for a continual-run moment (task index >= m.task)."""
  n = len(CL_NAMES)
  task_tmps = [TmpTracker(_task_dir(workdir, i) / 'checkpoints', proc.spawn_ns)
               for i in range(n)]
  snap_tmps = TmpTracker(snapshots.snapshot_root(workdir), proc.spawn_ns)
  start_task = _current_task(workdir)
  rows = [Rows(_task_dir(workdir, i) / 'metrics.jsonl') for i in range(n)]
  compile_rows = [sum('compile_s' in r for r in rows[i].get()) for i in range(n)]
  seen = {}

  def task_in_range():
    c = _current_task(workdir)
    return c if (m.task is None or c >= m.task) and c < n else None

  if m.kind == 'cl_startup':
    def ready():
      return proc.elapsed() >= m.delay

    def evidence():
      c = start_task
      added = sum('compile_s' in r for r in rows[c].get()) - compile_rows[c] if c < n else 0
      same = _current_task(workdir) == c
      where = 'compiling (header printed)' if proc.headers() else \
          'importing, validating or restoring the snapshots'
      return added == 0 and same and c < n, (
          f'{proc.killed_after:.2f} s after start, in task {c + 1}, {where}' +
          ('' if added == 0 and same else '; but it had got past its startup'))

  elif m.kind == 'cl_mid_async_save':
    def ready():
      c = task_in_range()
      names = [] if c is None else task_tmps[c].current()
      if names:
        seen.update(task=c, tmp=names[0])
      return bool(names)

    def evidence():
      c, name = seen['task'], seen['tmp']
      left = name in task_tmps[c].current()
      return left, f'while task {c + 1}\'s step {name.split(".")[0]} was being written' + (
          f' ({name} left behind)' if left else '; but the save had finished')

  elif m.kind == 'cl_after_checkpoint':
    def ready():
      c = task_in_range()
      if c is None:
        return False
      s = proc.start_step(CL_KEYS[c])
      new = [x for x in _committed(_task_dir(workdir, c) / 'checkpoints')
             if s is not None and x > s]
      if new:
        seen.update(task=c, step=max(new), start=s)
      return bool(new)

    def evidence():
      c, step = seen['task'], seen['step']
      ok = step in _committed(_task_dir(workdir, c) / 'checkpoints') and \
          _current_task(workdir) == c
      return ok, f'in task {c + 1}, right after its step {step} was committed (started ' \
                 f'from step {seen["start"]})'

  elif m.kind == 'cl_task_end':
    def trained(c):
      """This process printed task c's header and then its end (done:/already holds)."""
      heads = [h for h in proc.headers() if h[1] == CL_KEYS[c]]
      if not heads:
        return False
      return any(l.startswith('done: ') or 'already holds the final checkpoint' in l
                 for l in proc.lines[heads[-1][0] + 1:])

    def writing(c):
      return CL_NAMES[c] + TMP in snap_tmps.current()

    def ready():
      c = task_in_range()
      if c is not None and trained(c) and not writing(c):
        seen['task'] = c
        return True
      return False

    def evidence():
      c = seen['task']
      ok = _current_task(workdir) == c and not writing(c) and \
          CL_STEPS in _committed(_task_dir(workdir, c) / 'checkpoints')
      return ok, f'task {c + 1} trained to step {CL_STEPS}, before its snapshot was begun' + (
          '' if ok else '; but its snapshot had begun')

  elif m.kind == 'cl_mid_snapshot_write':
    def ready():
      c = task_in_range()
      if c is not None and CL_NAMES[c] + TMP in snap_tmps.current():
        seen['task'] = c
        return True
      return False

    def evidence():
      c = seen['task']
      left = CL_NAMES[c] + TMP in snap_tmps.current() and _current_task(workdir) == c
      return left, f'while snapshot {CL_NAMES[c]} was being written' + (
          f' ({CL_NAMES[c]}{TMP} left behind)' if left else '; but it had been written')

  elif m.kind == 'cl_task_switch':
    def between():
      """Index of the task whose snapshot this process wrote, while the next task has
      no step checkpoint yet; else None."""
      c = _current_task(workdir)
      if not (m.task + 1 <= c < n):
        return None
      meta = snapshots.snapshot_root(workdir) / CL_NAMES[c - 1] / 'meta' / 'metadata'
      try:
        fresh = os.stat(meta).st_mtime_ns >= proc.spawn_ns
      except FileNotFoundError:
        return None
      if not fresh or _committed(_task_dir(workdir, c) / 'checkpoints'):
        return None
      return c - 1

    def ready():
      done = between()
      if done is None:
        seen.pop('since', None)
        return False
      seen.setdefault('since', time.monotonic())
      seen['task'] = done
      return time.monotonic() - seen['since'] >= m.delay

    def evidence():
      done = between()
      snap = snapshots.snapshot_root(workdir) / CL_NAMES[seen['task']]
      writable = sum(1 for p in snap.rglob('*') if p.is_file() and os.stat(p).st_mode & 0o222)
      where = 'compiling it' if any(h[1] == CL_KEYS[seen['task'] + 1]
                                    for h in proc.headers()) else 'building it'
      return done == seen['task'], (
          f'{m.delay:.2f} s after snapshot {CL_NAMES[seen["task"]]} appeared, before task '
          f'{seen["task"] + 2}\'s first checkpoint ({where})' +
          (f'; {writable} file(s) of the snapshot still writable' if writable else ''))
  else:
    raise ValueError(m.kind)
  return ready, evidence


def plain_resume_point(workdir: Path):
  steps = _committed(workdir / 'checkpoints')
  return None, (max(steps) if steps else None)


def continual_resume_point(workdir: Path):
  c = _current_task(workdir)
  if c >= len(CL_NAMES):
    return None
  steps = _committed(_task_dir(workdir, c) / 'checkpoints')
  return CL_KEYS[c], (max(steps) if steps else None)


def check_resume(proc: Proc, expected, problems: list[str]) -> None:
  """The process's first header (of the expected task) must name the newest committed
  checkpoint as its start; nothing to check if it was killed before printing one."""
  if expected is None:
    return
  task, step = expected
  heads = [h for h in proc.headers() if task is None or h[1] == task]
  if not heads:
    return
  where = heads[0][2]
  if step is None and 'resumed' in where:
    problems.append(f'expected a fresh start of {task or "the run"}, got: {where}')
  if step is not None and not where.startswith(f'resumed from step {step}'):
    problems.append(f'expected "resumed from step {step}" ({task or "plain run"}), got: {where}')


# ------------------------------------------------------------------ Chains
class ChainError(AssertionError):
  pass


def run_chain(moments: list[Moment], args: list[str], workdir: Path, probe, resume_point,
              record: dict) -> None:
  """Kills the run at each moment in turn (retrying a missed one), then runs it to the
  end. Fills record['outcomes'] (one dict per moment) and record['problems']."""
  expected = None
  for m in moments:
    outcome = dict(moment=m, attempts=[], hit=False)
    record['outcomes'].append(outcome)
    for _ in range(MAX_ATTEMPTS):
      proc = Proc(args, workdir)
      try:
        ready, evidence = probe(m, proc, workdir)
        fired = False
        while proc.popen.poll() is None:
          if ready():
            proc.kill()
            fired = True
            break
          if proc.elapsed() > PROCESS_TIMEOUT:
            raise ChainError(f'{m.label()}: no sign of the moment after '
                             f'{PROCESS_TIMEOUT:.0f} s:\n{proc.tail()}')
          time.sleep(POLL_S)
      finally:
        proc.ensure_dead()
      rc = proc.finish()
      check_resume(proc, expected, record['problems'])
      if not fired or rc != -signal.SIGKILL:
        outcome['attempts'].append(dict(result='ended', returncode=rc))
        raise ChainError(
            f'{m.label()}: the process ended (return code {rc}) before the moment could fire; '
            f'the moment passed, so it is not counted. Output:\n{proc.tail()}')
      hit, detail = evidence()
      outcome['attempts'].append(dict(result='hit' if hit else 'missed', detail=detail,
                                      killed_after_s=round(proc.killed_after, 3)))
      expected = resume_point(workdir)
      if hit:
        outcome['hit'] = True
        break
    if not outcome['hit']:
      raise ChainError(f'{m.label()}: missed {MAX_ATTEMPTS} times (the moment had passed when '
                       f'SIGKILL landed): {outcome["attempts"]}')
  proc = Proc(args, workdir)
  rc = proc.finish(PROCESS_TIMEOUT * 2)
  check_resume(proc, expected, record['problems'])
  if rc != 0:
    raise ChainError(f'the final resumed run failed (return code {rc}):\n{proc.tail(40)}')
  record['final_output'] = proc.tail(5)


def uninterrupted(args: list[str], workdir: Path) -> None:
  proc = Proc(args, workdir)
  rc = proc.finish(PROCESS_TIMEOUT * 2)
  if rc != 0:
    raise ChainError(f'the uninterrupted reference run failed ({rc}):\n{proc.tail(40)}')


# ------------------------------------------------------------------ Comparisons
def _diff_trees(name: str, want, got, problems: list[str]) -> None:
  want_leaves, want_def = jax.tree_util.tree_flatten_with_path(want)
  got_leaves, got_def = jax.tree_util.tree_flatten_with_path(got)
  if want_def != got_def:
    problems.append(f'{name}: tree structures differ')
    return
  for (path, a), (_, b) in zip(want_leaves, got_leaves):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
      where = jax.tree_util.keystr(path)
      diff = np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))) \
          if a.shape == b.shape and a.dtype.kind in 'fiu' else 'n/a'
      problems.append(f'{name}{where}: not bit-exact (max |diff| {diff})')


def _final_state(workdir: Path):
  stored = stored_config(workdir)
  trainer = Trainer(config_defaults.complete(stored))
  checkpointer = Checkpointer(workdir, keep=stored.get('keep_checkpoints', 3))
  try:
    state, step, _ = checkpointer.restore_newest(trainer.abstract_state())
  finally:
    checkpointer.close()
  return jax.device_get(state), step


def _metric_rows(path: Path) -> tuple[list, list]:
  """([(step, loss)], [(step, {eval_*})]) of a metrics.jsonl: what an uninterrupted run and
  a resumed one must share (timings and compile rows differ)."""
  rows = Rows(path).get()
  train = [(r['step'], r['loss']) for r in rows if 'loss' in r]
  evals = [(r['step'], {k: v for k, v in r.items() if k.startswith('eval_')})
           for r in rows if _is_eval_row(r)]
  return train, evals


def compare_plain(reference: Path, workdir: Path, problems: list[str]) -> None:
  want, want_step = _final_state(reference)
  got, got_step = _final_state(workdir)
  if not want_step == got_step == PLAIN_STEPS:
    problems.append(f'final steps: reference {want_step}, resumed {got_step}')
  _diff_trees('train state', want, got, problems)
  if _metric_rows(reference / 'metrics.jsonl') != _metric_rows(workdir / 'metrics.jsonl'):
    problems.append('metrics.jsonl: the loss/eval rows differ from the uninterrupted run\'s')


def compare_continual(reference: Path, workdir: Path, problems: list[str]) -> None:
  want = json.loads((reference / 'continual.json').read_text())
  got = json.loads((workdir / 'continual.json').read_text())
  for key in ('R', 'R_bit_errors_per_seq', 'ACC', 'BWT', 'FWT', 'forgetting'):
    if got.get(key) != want.get(key):
      problems.append(f'continual.json {key}: {got.get(key)} != {want.get(key)}')
  names = [n for _, n, _ in snapshots.list_snapshots(reference)]
  if names != CL_NAMES or [n for _, n, _ in snapshots.list_snapshots(workdir)] != names:
    problems.append(f'snapshots: reference {names}, resumed '
                    f'{[n for _, n, _ in snapshots.list_snapshots(workdir)]}')
    return
  abstract = runner.Sequence(cl_ntm_tasks.get_config('tiny')).abstract_params()
  for name in names:
    a, b = (snapshots.snapshot_root(w) / name for w in (reference, workdir))
    _diff_trees(f'snapshot {name} params', jax.device_get(snapshots.restore_params(a, abstract)),
                jax.device_get(snapshots.restore_params(b, abstract)), problems)
    _diff_trees(f'snapshot {name} replay', snapshots.restore_replay(a),
                snapshots.restore_replay(b), problems)
  for i in range(len(CL_NAMES)):
    if _metric_rows(_task_dir(reference, i) / 'metrics.jsonl') != \
        _metric_rows(_task_dir(workdir, i) / 'metrics.jsonl'):
      problems.append(f'task {CL_NAMES[i]} metrics.jsonl: the loss/eval rows differ')


# ------------------------------------------------------------------ The test
def _guarded(record: dict, work) -> None:
  started = time.monotonic()
  try:
    work()
    record['completed'] = True
  except BaseException as e:  # noqa: BLE001 -- reported by the main thread
    record.setdefault('error', f'{type(e).__name__}: {e}')
  finally:
    record['seconds'] = round(time.monotonic() - started, 1)


def trial_lines(record: dict) -> list[dict]:
  lines = []
  for outcome in record['outcomes']:
    m = outcome['moment']
    if not outcome['hit']:
      result = 'not-hit'
    elif 'error' in record or not record.get('completed'):
      result = 'error'
    else:
      result = 'mismatch' if record['problems'] else 'bit-exact'
    lines.append(dict(fault='sigkill', moment=m.kind, run=m.run, label=m.label(), seed=SEED,
                      result=result, attempts=outcome['attempts']))
  return lines


# What draw_schedule(SEED) gives (the module docstring lists it; a change shows here).
DRAWN = ['plain/startup(delay=1.03s)', 'plain/after_rows(k=5)', 'plain/after_checkpoint',
         'plain/mid_eval', 'plain/mid_async_save', 'continual/cl_mid_async_save(task>=0)',
         'continual/cl_task_end(task>=0)', 'continual/cl_task_switch(task>=0, delay=0.01s)',
         'continual/cl_after_checkpoint(task>=1)', 'continual/cl_mid_snapshot_write(task>=1)']


@pytest.mark.slow
def test_sigkill_at_ten_scheduled_moments_then_resume_is_bit_exact(tmp_path):
  plain_moments, continual_moments = draw_schedule(SEED)
  schedule = plain_moments + continual_moments
  assert [m.label() for m in schedule] == DRAWN
  assert any(m.kind == 'mid_async_save' for m in plain_moments)
  assert any(m.kind == 'cl_task_switch' for m in continual_moments)
  assert any(m.kind == 'cl_mid_snapshot_write' for m in continual_moments)

  records = {name: dict(outcomes=[], problems=[]) for name in ('plain', 'continual')}
  plain_ref, plain_dir = tmp_path / 'plain_reference', tmp_path / 'plain'
  cl_ref, cl_dir = tmp_path / 'continual_reference', tmp_path / 'continual'
  cl_ref_done = threading.Event()

  def plain_then_continual_reference():
    # The continual chain is the longer one: its reference runs here, after the plain chain.
    try:
      uninterrupted(PLAIN, plain_ref)
      run_chain(plain_moments, PLAIN, plain_dir, plain_probe, plain_resume_point,
                records['plain'])
      compare_plain(plain_ref, plain_dir, records['plain']['problems'])
    finally:
      try:
        uninterrupted(CONTINUAL, cl_ref)
      except BaseException as e:  # noqa: BLE001
        records['continual']['error'] = f'{type(e).__name__}: {e}'
      cl_ref_done.set()

  def continual_chain():
    run_chain(continual_moments, CONTINUAL, cl_dir, continual_probe, continual_resume_point,
              records['continual'])
    cl_ref_done.wait()
    if 'error' not in records['continual']:
      compare_continual(cl_ref, cl_dir, records['continual']['problems'])

  threads = [
      threading.Thread(target=_guarded, args=(records['plain'], plain_then_continual_reference)),
      threading.Thread(target=_guarded, args=(records['continual'], continual_chain))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()

  trials = trial_lines(records['plain']) + trial_lines(records['continual'])
  fault_report.append(trials)
  for t in trials:
    print(f'{t["label"]}: {t["result"]}; ' +
          ' | '.join(f'{a["result"]}: {a.get("detail", "")}' for a in t['attempts']))
  for name, record in records.items():
    print(f'{name} thread: {record.get("seconds")} s')

  for name, record in records.items():
    assert 'error' not in record, f'{name} chain: {record["error"]}'
    assert not record['problems'], f'{name} chain: ' + '\n'.join(record['problems'])
  assert [t['result'] for t in trials] == ['bit-exact'] * 10
  # Where the evidence says it: a write was in flight and a task switch was under way.
  assert any(t['moment'] == 'mid_async_save' and t['result'] == 'bit-exact' for t in trials)
  assert any(t['moment'] == 'cl_task_switch' and t['result'] == 'bit-exact' for t in trials)
