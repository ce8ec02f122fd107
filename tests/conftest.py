"""Helpers shared by tests that drive the command-line entry points in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Workers for `-n auto` (pyproject.toml): one per CPU this process may use, at most 4 —
# the tests start trainings and multi-process runs of their own, and more workers than
# that only queue behind each other. psutil's physical count, xdist's default, can be 1 on
# a 2-vCPU machine and would leave the second core idle.
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config) -> int:
  usable = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')  # not on macOS
            else os.cpu_count() or 1)
  return max(1, min(MAX_WORKERS, usable))


def pytest_configure(config):
  # In-process tests compile the same train steps again and again (every resume, every
  # module fixture rebuilt on another worker); the command-line tools already use memflax's
  # persistent cache, so the tests that call the library directly use it too
  # (memflax/compilation_cache.py).
  from memflax import compilation_cache
  compilation_cache.enable()


def cli_env(devices: int | None = None) -> dict:
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  if devices:
    # Exactly what a user types: no other flag (the trainer bounds its own queue).
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['PYTHONPATH'] = str(REPO) + os.pathsep + env.get('PYTHONPATH', '')
  return env


def run_cli(script: str, *args: str, devices: int | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess:
  """Runs `python <script> args...` from the repo root; returns the finished process."""
  return subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO,
                        env=cli_env(devices), capture_output=True, text=True, timeout=timeout)


def read_metrics(workdir: Path) -> list[dict]:
  return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
  return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.fixture
def tiny_ntm_args():
  return ['--config=configs/ntm_copy.py:tiny']
