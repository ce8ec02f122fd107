"""What a run prints: a redrawn bar only on a terminal (and only if wanted), one line per
event in a log. The terminal is a real pseudo-terminal, the run a real train.py."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios

from conftest import REPO, cli_env

from memflax import progress_log

TINY = ('--config=configs/lstm_copy.py:tiny', '--config.num_train_steps=40',
        '--config.log_every_steps=5', '--config.eval_every_steps=20',
        '--config.checkpoint_every_steps=40', '--config.eval.num_sequences=32')


def run_on_terminal(workdir, *extra) -> str:
  """train.py with stdout and stderr on a pseudo-terminal; everything it wrote there."""
  leader, follower = pty.openpty()
  # A new pseudo-terminal is 0×0, and tqdm draws nothing that wide: give it a real size.
  fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 120, 0, 0))
  proc = subprocess.Popen([sys.executable, str(REPO / 'train.py'), *TINY,
                           f'--workdir={workdir}', *extra], cwd=REPO, env=cli_env(),
                          stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
  os.close(follower)
  chunks = []
  while True:
    try:
      chunk = os.read(leader, 65536)
    except OSError:  # the terminal closes when the process exits
      break
    if not chunk:
      break
    chunks.append(chunk)
  assert proc.wait(timeout=600) == 0, b''.join(chunks).decode(errors='replace')[-2000:]
  os.close(leader)
  return b''.join(chunks).decode(errors='replace')


def is_bar(text: str) -> bool:
  return '40/40' in text and '\r' in text and '|' in text  # tqdm's redrawn "n/total |███|"


def test_terminal_gets_a_bar(tmp_path):
  out = run_on_terminal(tmp_path / 'run')
  assert is_bar(out)
  assert 'step 20/40' not in out  # the bar replaces the per-event lines
  assert 'done: lstm on copy' in out


def test_progress_false_prints_lines_even_on_a_terminal(tmp_path):
  out = run_on_terminal(tmp_path / 'run', '--config.log.progress=false')
  assert not is_bar(out) and '\r\n' in out  # a pty turns \n into \r\n; no bare \r redraws
  assert '\r' not in out.replace('\r\n', '')
  assert [line.split(',')[0] for line in out.splitlines() if line.startswith('step ')] == [
      'step 20/40', 'step 40/40']


def test_log_gets_one_line_per_event(tmp_path):
  proc = subprocess.run([sys.executable, str(REPO / 'train.py'), *TINY,
                         f'--workdir={tmp_path / "run"}'], cwd=REPO, env=cli_env(),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert '\r' not in proc.stdout + proc.stderr
  assert [line.split(',')[0] for line in proc.stdout.splitlines()
          if line.startswith('step ')] == ['step 20/40', 'step 40/40']


class FakeTerminal(io.StringIO):

  def isatty(self) -> bool:
    return True


def test_loop_bar_only_on_a_terminal_and_when_enabled():
  items = [1, 2, 3]
  log = io.StringIO()
  assert progress_log.bar(items, 3, 'sizes', stream=log) is items  # silent, untouched
  assert log.getvalue() == ''
  terminal = FakeTerminal()
  assert progress_log.bar(items, 3, 'sizes', enabled=False, stream=terminal) is items
  assert list(progress_log.bar(items, 3, 'sizes', stream=terminal)) == items
  assert 'sizes:' in terminal.getvalue() and '/3 [' in terminal.getvalue()


def test_every_benchmark_script_shows_progress_on_a_terminal():
  # Sweeps run for minutes to hours; each loops through progress_log.bar (a bar on a TTY,
  # its own lines in a log). fault_suite.py runs pytest, whose progress line is the bar.
  scripts = sorted((REPO / 'benchmarks').glob('*.py'))
  lacking = [p.name for p in scripts if p.name not in ('__init__.py', 'fault_suite.py')
             and 'progress_log.bar(' not in p.read_text()]
  assert len(scripts) >= 10 and not lacking, lacking
