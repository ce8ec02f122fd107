"""A multi-process run whose peer dies: every survivor stops within a bound, with one line.

When one process of a jax.distributed run is killed (OOM killer, a lost host, ^C in one
terminal), the others cannot go on: every step is a collective. What jax does left to
itself (measured on 2 CPU processes, gloo collectives, jax 0.10.2):

* a worker is killed: the coordinator's next collective fails at once ("Gloo AllGather
  failed: ... Connection closed by peer"), Python prints a traceback, and then jax's
  atexit shutdown waits for the dead process at the shutdown barrier until its heartbeat
  times out (100 s by default) and aborts from C++ with ~70 lines of log: about 90 s
  and status 134;
* the coordinator (process 0, which hosts the coordination service) is killed: the
  survivors' error polling fails within a second and jax aborts them from C++
  (`LOG(FATAL)` "Terminating process because the JAX distributed service detected fatal
  errors", a stack trace and Python's fault dump): status 134 and ~70 lines.

`install()` (called by `memflax.parallel.initialize_distributed`, before
`jax.distributed.initialize`) makes every survivor stop within `BOUND_S` (30) seconds
of the loss with exactly one line on stderr,

  error: lost the other process of this 2-process run (...); process 0 stops too:
  rerun both processes with the same command to resume from the last checkpoint

by three means:

1. A heartbeat timeout of `HEARTBEAT_TIMEOUT_S` (jax's default is 100 s) for the
   coordination service: a process that stops sending heartbeats, however it died or
   hung, is declared dead within that time and every other process gets the error.
2. `sys.excepthook`: an exception from a collective or from the coordination service
   (gloo "Connection reset by peer", a failed barrier) prints the line and ends the
   process at once with status `EXIT_LOST_PROCESS` (4) -- without running atexit
   handlers, which would otherwise wait at jax's shutdown barrier for the dead process.
3. A stderr guard: jax ends a process from C++ when the coordination service reports a
   failure (its `missed_heartbeat_callback` cannot be a Python function in jaxlib 0.10:
   the status argument has no Python conversion and the call throws std::bad_cast).
   Nothing in the process can print after that, so stderr goes through a small child
   process (`python -I memflax/peer_watchdog.py`, on a pipe, or on a pty when stderr is a
   terminal so progress bars stay interactive) that copies everything through unchanged
   except jax's fatal report: the coordination-service log lines just before it and
   everything after it (stack trace, fault dump) are replaced by the one line. The
   process then ends with status 134 (SIGABRT; jax's abort cannot be turned into
   another status, and a shell adds its own "Aborted" note).

Measured with this module (2 CPU processes, tiny NTM, a loaded 2-core machine): a killed
worker or a killed coordinator -> the survivor's collective fails and it exits with 4
within 0.1-0.2 s; a worker stopped with SIGSTOP (hung, not dead) -> the survivor exits
with 134 after 15 s (heartbeat timeout), with the line. Which of jax's failing
collective and its coordination-service report reaches a survivor first is a race
inside jax: status 4 or 134, the same one line either way.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time

# A process that sends no heartbeat for this long is declared dead (jax's default: 100 s).
# Heartbeats come from a C++ thread, so long compiles or a busy Python loop do not delay
# them; 20 s leaves a wide margin on a loaded machine.
HEARTBEAT_TIMEOUT_S = 20
# Upper bound on the time from a process's death to the survivors' exit: the heartbeat
# timeout plus the coordination service's staleness check and error propagation.
BOUND_S = HEARTBEAT_TIMEOUT_S + 10
EXIT_LOST_PROCESS = 4

# What jax prints (LOG(FATAL), client.h) just before it aborts a process whose
# coordination service reported an error.
_FATAL_MARKER = b'JAX distributed service detected fatal errors'
# glog-style lines from the coordination service and its clients, e.g.
# "E1128 04:34:46.465300     496 coordination_service.cc:1520] ..."
_SERVICE_LOG = re.compile(rb'^[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]*(coordination|preemption|client)'
                          rb'[\w.]*:\d+\]')
_GLOG_START = re.compile(rb'^[IWEF]\d{0,4}( [\d:.]*)?$|^[IWEF]\d{4} ')
_HOLD_S = 3.0
_LINE_START = b'error: lost '  # service log lines not followed by the fatal report within this are copied

# Words in an exception that mean a collective or the coordination service lost a peer.
_LOST_PEER_WORDS = ('Gloo', 'gloo', 'coordination service', 'CoordinationService',
                    'heartbeat', 'leader task', 'Connection closed by peer',
                    'Connection reset by peer')

_installed = False
_identity: tuple[int, int, str] = (0, 1, '')


def message(process_id: int, num_processes: int, cause: str) -> str:
  """The one line a survivor prints."""
  if num_processes == 2:
    lost, rerun = 'the other process of this 2-process run', 'both processes'
  else:
    lost, rerun = (f'another process of this {num_processes}-process run',
                   f'all {num_processes} processes')
  return (f'error: lost {lost} ({cause}); process {process_id} stops too: rerun {rerun} '
          'with the same command to resume from the last checkpoint')


def install(coordinator_address: str, num_processes: int, process_id: int) -> None:
  """Sets up the excepthook and the stderr guard (idempotent). Call before
  jax.distributed.initialize, with the same arguments."""
  global _installed, _identity
  if _installed or num_processes < 2:
    return
  _installed = True
  _identity = (process_id, num_processes, coordinator_address)
  _start_stderr_guard(coordinator_address, num_processes, process_id)
  previous = sys.excepthook

  def excepthook(kind, value, traceback):
    cause = lost_peer_cause(value)
    if cause is None:
      return previous(kind, value, traceback)
    exit_lost_process(cause)

  sys.excepthook = excepthook


def lost_peer_cause(error: BaseException | None) -> str | None:
  """A short reason if `error` (or an exception it was raised from or during) says a
  collective or the coordination service lost a peer; None otherwise."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, Exception):
      text = str(error)
      if any(word in text for word in _LOST_PEER_WORDS):
        first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        first = re.sub(r'\[[^\]]*\.(cc|h):\d+\]\s*', '', first)  # C++ source locations
        first = re.sub(r'^[A-Z_]+: ', '', first)  # the status code
        return first[:200]
    error = error.__cause__ or error.__context__
  return None


def exit_lost_process(cause: str) -> None:
  """Prints the line and ends this process now (no atexit handlers: jax's would wait for
  the dead process at its shutdown barrier)."""
  process_id, num_processes, _ = _identity
  try:
    sys.stdout.flush()
  except Exception:  # noqa: BLE001 -- exiting anyway
    pass
  try:
    sys.stderr.write(message(process_id, num_processes, cause) + '\n')
    sys.stderr.flush()
  finally:
    os._exit(EXIT_LOST_PROCESS)


# ------------------------------------------------------------------ stderr guard
def _start_stderr_guard(coordinator_address: str, num_processes: int, process_id: int) -> None:
  try:
    sys.stderr.flush()
  except Exception:  # noqa: BLE001
    pass
  if os.isatty(2):
    import fcntl
    import pty
    import termios
    import tty
    read_end, write_end = pty.openpty()
    tty.setraw(write_end)  # no \n -> \r\n translation, no echo: a transparent channel
    try:
      size = fcntl.ioctl(2, termios.TIOCGWINSZ, b'\0' * 8)
      fcntl.ioctl(write_end, termios.TIOCSWINSZ, size)
    except OSError:
      pass
  else:
    read_end, write_end = os.pipe()
  try:
    # -I: standard library only (this file imports nothing else), no jax: starts in ~50 ms.
    subprocess.Popen([sys.executable, '-I', os.path.abspath(__file__), str(process_id),
                      str(num_processes), coordinator_address],
                     stdin=read_end, stdout=2, stderr=2, close_fds=True)
  except OSError:  # no guard: jax's own report stays as it is
    os.close(read_end)
    os.close(write_end)
    return
  os.close(read_end)
  os.dup2(write_end, 2)
  os.close(write_end)


def _cause_from_report(report: bytes, coordinator_address: str) -> str:
  text = report.decode('utf-8', 'replace')
  dead = re.search(r'Task (\d+) heartbeat timeout', text) or \
      re.search(r'stopped sending heartbeats\):\s*(\d+)', text)
  if dead:
    return f'process {dead.group(1)} stopped sending heartbeats for {HEARTBEAT_TIMEOUT_S} s'
  if re.search(r'leader task|coordination service|Socket closed|Connection refused', text):
    return f'process 0, which runs the coordination service at {coordinator_address}, is gone'
  status = re.search(r'absl::Status: (.*)', text)
  return (status.group(1) if status else 'the coordination service reported an error')[:200]


def _guard_main(argv: list[str]) -> None:
  """Copies stdin to stdout (the training process's real stderr) until EOF, replacing
  jax's fatal coordination-service report by the one line."""
  process_id, num_processes, coordinator_address = int(argv[0]), int(argv[1]), argv[2]
  for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # live as long as the writer
    signal.signal(sig, signal.SIG_IGN)
  src, dst = 0, 1
  buf = b''              # bytes read and not yet copied or held
  held = b''             # service log lines that may precede the fatal report
  held_since = None
  fatal = False
  tail_since = None

  def out(data: bytes) -> None:
    while data:
      try:
        data = data[os.write(dst, data):]
      except InterruptedError:
        continue
      except OSError:
        return

  while True:
    timeout = 0.1 if (held or buf) else None
    ready, _, _ = select.select([src], [], [], timeout)
    eof = False
    if ready:
      try:
        chunk = os.read(src, 65536)
      except OSError:  # EIO: the pty's last writer is gone
        chunk = b''
      eof = not chunk
      buf += chunk
    while b'\n' in buf:
      line, buf = buf.split(b'\n', 1)
      line += b'\n'
      if fatal:
        continue
      # A progress bar's last \r update may share the line: look past it.
      shown, _, rest = line.rpartition(b'\r')
      shown += b'\r' if b'\r' in line else b''
      if rest.startswith(_LINE_START):
        # The process said it itself (the excepthook) and is ending: jax's report or
        # log lines around it are noise.
        out(shown + rest)
        held, held_since, fatal = b'', None, True
      elif _FATAL_MARKER in line:
        fatal = True
        report = held + line + buf
        held, held_since = b'', None
        out((message(process_id, num_processes,
                     _cause_from_report(report, coordinator_address)) + '\n').encode())
      elif held:
        held += line
      elif _SERVICE_LOG.match(rest):
        out(shown)
        held, held_since = rest, time.monotonic()
      else:
        out(line)
    now = time.monotonic()
    if held and (eof or now - held_since > _HOLD_S):
      out(held)
      held, held_since = b'', None
    if buf and not fatal and not held:
      # A partial line (a progress bar's \r update) is copied at once, unless it may be
      # the start of a log line that needs holding; that waits for its end (or 0.3 s).
      if not _GLOG_START.match(buf[:24]):
        out(buf)
        buf, tail_since = b'', None
      else:
        tail_since = tail_since or now
        if eof or now - tail_since > 0.3:
          out(buf)
          buf, tail_since = b'', None
    if eof:
      if not fatal:
        out(held + buf)
      return


if __name__ == '__main__':
  _guard_main(sys.argv[1:])
