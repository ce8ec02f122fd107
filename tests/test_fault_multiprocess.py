"""One process of a two-process run is SIGKILLed mid-training: the other stops within
peer_watchdog.BOUND_S with one `error:` line, and rerunning both with the same command
resumes from the last checkpoint and ends with the parameters of an uninterrupted run.

Real processes: `python train.py ... --coordinator_address=127.0.0.1:PORT`, jax.distributed
with gloo CPU collectives.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import portpicker
import pytest

from conftest import REPO, cli_env
from memflax import peer_watchdog

STEPS, EVERY = 200, 50
ARGS = ['--config=configs/ntm_copy.py:tiny', f'--config.num_train_steps={STEPS}',
        f'--config.checkpoint_every_steps={EVERY}', f'--config.log_every_steps={EVERY}',
        f'--config.eval_every_steps={STEPS}', '--config.eval.num_sequences=16',
        '--config.log.progress=False', '--config.log.tensorboard=False']
LOST = 'error: lost the other process of this 2-process run'
# How a survivor ends: its excepthook (a failed collective) or jax's abort (SIGABRT).
STOPPED = (peer_watchdog.EXIT_LOST_PROCESS, -signal.SIGABRT)
RERUN = 'rerun both processes with the same command to resume from the last checkpoint'


def start(workdir: Path, port: int) -> list[subprocess.Popen]:
  return [subprocess.Popen([sys.executable, str(REPO / 'train.py'), *ARGS, f'--workdir={workdir}',
                            f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                            f'--process_id={i}'],
                           cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
          for i in range(2)]


def finish(procs: list[subprocess.Popen]) -> list[tuple[str, str]]:
  return [p.communicate(timeout=300) for p in procs]


def committed(workdir: Path) -> list[int]:
  root = workdir / 'checkpoints'
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []


def state_digests(workdir: Path, step: int) -> dict:
  """SHA-256 of every array of the train state at `step` (memflax.integrity's record)."""
  record = json.loads((workdir / 'checkpoints' / str(step) / 'integrity' / 'metadata').read_text())
  return record['trees']['state']


def kill_mid_training(workdir: Path, port: int, victim: int):
  """Starts both processes with the same command as before, SIGKILLs `victim` once a
  checkpoint newer than the workdir's last one is committed; returns (the newest committed
  step, the other process's return code, seconds from the kill to its exit,
  [(stdout, stderr)] of both)."""
  before = max(committed(workdir), default=0)
  procs = start(workdir, port)
  deadline = time.monotonic() + 240
  while max(committed(workdir), default=0) <= before:
    assert all(p.poll() is None for p in procs), finish(procs)
    assert time.monotonic() < deadline, 'no new checkpoint within 240 s'
    time.sleep(0.02)
  kept = max(committed(workdir))
  assert kept < STEPS, 'the run finished before the kill'
  procs[victim].send_signal(signal.SIGKILL)
  killed_at = time.monotonic()
  survivor = procs[1 - victim]
  try:
    survivor.wait(timeout=peer_watchdog.BOUND_S + 30)
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f'process {1 - victim} still running {peer_watchdog.BOUND_S + 30} s after '
                f'process {victim} was killed: {finish(procs)}')
  took = time.monotonic() - killed_at
  outputs = finish(procs)
  assert procs[victim].returncode == -signal.SIGKILL
  return max(committed(workdir)), survivor.returncode, took, outputs


def check_one_line(stderr: str, survivor: int) -> None:
  lines = [line for line in stderr.splitlines() if line.strip()]
  lost = [line for line in lines if line.startswith('error:')]
  assert len(lost) == 1 and lost[0].startswith(LOST) and lost[0].endswith(RERUN), stderr
  assert f'process {survivor} stops too' in lost[0]
  for noise in ('Traceback', 'Check failure', 'Fatal Python error'):
    assert noise not in stderr, stderr
  assert not re.search(r'^[WEF]\d{4} ', stderr, re.M), stderr  # C++ (glog) log lines


def resumed_from(stdout: str) -> int:
  found = re.search(r'resumed from step (\d+)', stdout)
  assert found, stdout
  return int(found.group(1))


@pytest.mark.slow
def test_lost_process_stops_the_other_and_rerunning_both_resumes(tmp_path):
  """Worker killed, rerun; coordinator killed, rerun: the same final state as a run
  that was never interrupted."""
  workdir, reference = tmp_path / 'run', tmp_path / 'uninterrupted'
  port = portpicker.pick_unused_port()  # one command, rerun as it is: the same port
  # Worker lost: the coordinator's next collective fails (the excepthook exits with 4) or
  # jax's coordination service reports the loss first (abort; the stderr guard replaces
  # jax's report by the line): a race inside jax, either is fine.
  kept, code, took, outputs = kill_mid_training(workdir, port, victim=1)
  assert code in STOPPED, (code, outputs)
  assert took < peer_watchdog.BOUND_S, took
  check_one_line(outputs[0][1], survivor=0)

  # Rerun, and this time lose the coordinator (process 0, which hosts jax's coordination
  # service): the same two ways to stop.
  kept_again, code, took, outputs = kill_mid_training(workdir, port, victim=0)
  assert resumed_from(outputs[0][0]) == kept < kept_again
  assert code in STOPPED, (code, outputs)
  assert took < peer_watchdog.BOUND_S, took
  check_one_line(outputs[1][1], survivor=1)

  procs = start(workdir, port)
  outputs = finish(procs)
  assert [p.returncode for p in procs] == [0, 0], outputs
  assert resumed_from(outputs[0][0]) == kept_again
  procs = start(reference, portpicker.pick_unused_port())
  outputs = finish(procs)
  assert [p.returncode for p in procs] == [0, 0], outputs
  # The state and the data are pure functions of (seed, step): bit for bit.
  assert state_digests(workdir, STEPS) == state_digests(reference, STEPS)


def test_message_names_the_lost_process_and_the_rerun():
  line = peer_watchdog.message(0, 2, 'process 1 stopped sending heartbeats for 20 s')
  assert line.startswith(LOST) and line.endswith(RERUN)
  assert 'all 4 processes' in peer_watchdog.message(3, 4, 'x')


def test_lost_peer_cause_reads_gloo_and_coordination_errors():
  error = RuntimeError('UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/'
                       'pair.cc:547] Connection closed by peer [127.0.0.1]:45450')
  assert peer_watchdog.lost_peer_cause(error) == \
      'Gloo AllGather failed: Connection closed by peer [127.0.0.1]:45450'
  try:
    try:
      raise error
    finally:
      raise ValueError('cleanup failed')  # e.g. a checkpoint close during unwinding
  except ValueError as chained:
    assert peer_watchdog.lost_peer_cause(chained).startswith('Gloo AllGather failed')
  assert peer_watchdog.lost_peer_cause(ValueError('bad shape')) is None



def test_checkpoint_write_failed_by_a_dead_peer_is_a_lost_process(tmp_path, monkeypatch):
  # Seen once in the suite: the worker was killed while the coordinator's step-50 save
  # waited in orbax's closing barrier, and the coordinator printed "free space" instead
  # of the lost-process line. Now the barrier's error goes to peer_watchdog unwrapped.
  import jax
  from memflax.checkpoint import Checkpointer, CheckpointWriteError
  checkpointer = Checkpointer(tmp_path)
  barrier = RuntimeError('INTERNAL: Barrier failed because: task is set to ERROR: '
                         'UNAVAILABLE: Task 1 heartbeat timeout. This indicates that the '
                         'remote task has failed')
  disk = OSError(28, 'No space left on device')
  # One process: no peer to lose, so the write error it always was.
  assert isinstance(checkpointer._write_error(50, barrier), CheckpointWriteError)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  assert isinstance(checkpointer._write_error(50, disk), CheckpointWriteError)
  raised = checkpointer._write_error(50, barrier)
  assert raised is barrier
  cause = peer_watchdog.lost_peer_cause(raised)
  assert cause.startswith('Barrier failed because') and 'Task 1 heartbeat timeout' in cause
  checkpointer.close()

# What jax 0.10.2 wrote on the worker's stderr when the coordinator was killed (shortened).
JAX_REPORT = """\
W1128 04:35:06.377187    3733 preemption_sync_manager.cc:147] Failed to retrieve preemption notice from coordination service: UNAVAILABLE: Socket closed
Additional GRPC error information from remote target coordination_service while calling /xla.coordination.CoordinationService/GetKeyValue:
E1128 04:35:06.377279    3733 coordination_service_agent.cc:289] Polled an error from coordination service (this can be an error from this or another task).
F1128 04:35:06.377285    3733 client.h:80] Terminating process because the JAX distributed service detected fatal errors. This most likely indicates that another task died; see the other task logs for more details. absl::Status: UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was preempted/died/restarted unexpectedly or this task is experiencing network issues.
*** Check failure stack trace: ***
    @     0x7f005ea40634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
Fatal Python error: Aborted

Thread 0x00007f0066be8b80 (most recent call first):
  File "/work/main/.venv/lib/python3.11/site-packages/jax/_src/distributed.py", line 199 in shutdown
"""


def guard(text: str) -> str:
  return subprocess.run([sys.executable, '-I', peer_watchdog.__file__, '1', '2', '127.0.0.1:1234'],
                        input=text.encode(), capture_output=True, timeout=30).stdout.decode()


def test_stderr_guard_replaces_jax_fatal_report_by_the_line():
  out = guard('memflax: training\nstep 1\r' + JAX_REPORT)
  assert out == 'memflax: training\nstep 1\r' + peer_watchdog.message(
      1, 2, 'process 0, which runs the coordination service at 127.0.0.1:1234, is gone') + '\n'


def test_stderr_guard_keeps_the_process_own_line_and_drops_what_follows():
  line = peer_watchdog.message(1, 2, 'Gloo AllGather failed: Connection closed by peer')
  out = guard('step 1\r' + JAX_REPORT.splitlines(True)[2] + line + '\n' + JAX_REPORT)
  assert out == 'step 1\r' + line + '\n'


def test_stderr_guard_copies_everything_else():
  text = ('warning: something\nE1128 04:35:06.377279 3733 coordination_service_agent.cc:289] '
          'not fatal\ncontinued\nlast line without newline')
  assert guard(text) == text
