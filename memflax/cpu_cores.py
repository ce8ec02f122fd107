"""One CPU device per core: the command-line tools split each batch over the cores.

Why: XLA runs one CPU device's step on essentially one thread. A memory model's step
is a long scan of small kernels (the NTM's copy step: ~500 per time step), too small
for XLA's intra-op threads to split, so on this project's 2-core machine a batch-32
step left the second core idle. With one device per core the step is data parallel
(`memflax.parallel`: each device scans its rows, gradients are averaged), and the
NTM copy step at batch 32 runs at 2.2-2.4x the single-device rate
(benchmarks/results/ntm_throughput_cores.json).

`use_every_core()` asks jax for one CPU device per usable core (at most MAX_DEVICES)
before the backend starts; train.py, eval.py and the throughput benchmarks call it.
A count the user chose wins: XLA_FLAGS with --xla_force_host_platform_device_count
or jax's jax_num_cpu_devices leave everything as it is (count 1 gives the single-
device run). `run_devices(config)` is the devices a run's mesh spans: all of them,
except that when memflax chose the count, a batch the count does not divide uses
the largest count that divides it (batch 1: one device).

A process whose runs all span one device (batch 1; train.py and the throughput
benchmark pass their runs' sizes to use_every_core) keeps one device and one core, the
one it runs on now: with the device count raised, the idle device's threads cost the NTM
copy step at batch 1 10-20 %; with one device and its threads left free over both cores,
about 4 runs in 10 ran 1.5x slower for the whole run (780 against 1,190 sequences/s).
Kept to one core, 12 runs of 12 ran fast; compiling takes longer (16 against 9 s), once
per config (the compilation cache).

It also turns off XLA's concurrency-optimised CPU scheduler (SCHEDULER_FLAG). That
scheduler orders a step's independent kernels so that the thunk executor can run them
on several threads at once; for kernels of a few microseconds the hand-offs between
cores cost more than they save. Without it the NTM copy step at batch 1 runs at ~540
instead of ~400 sequences/s on this machine, with bit-identical results (the order of
independent kernels changes, not what they compute).
"""

from __future__ import annotations

import math
import os

import jax

DEVICE_COUNT_FLAG = 'xla_force_host_platform_device_count'
SCHEDULER_FLAG = '--xla_cpu_enable_concurrency_optimized_scheduler=false'
# More devices than this shrink each device's rows below what pays for the all-reduce
# at the batch sizes memflax's configs use (8-32); measured only up to 2 cores here.
MAX_DEVICES = 8

_chosen_by_memflax = False


def usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))  # honours taskset and container CPU sets
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def user_chose_count() -> bool:
  return (DEVICE_COUNT_FLAG in os.environ.get('XLA_FLAGS', '')
          or jax.config.jax_num_cpu_devices != -1)


def use_every_core(*row_counts: int) -> int:
  """Gives jax one CPU device per usable core unless the user set a count, and XLA's CPU
  scheduler SCHEDULER_FLAG unless the user chose one; returns the device count asked
  for (0 when left alone). Call before any jax computation: the CPU
  backend reads the count when it starts. Only the CPU backend's devices change; on a
  GPU or TPU host jax's default devices stay the accelerators.

  `row_counts`, when given, are the runs this process will make (run_rows of each
  config): if every one of them would span a single device, the process keeps one
  device and one core instead (the core it runs on now; MEMFLAX_ONE_CORE=0 leaves it
  free), see the module docstring."""
  global _chosen_by_memflax
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_cpu_enable_concurrency_optimized_scheduler' not in flags \
      and 'xla_cpu_scheduler_type' not in flags:  # read when the backend starts
    os.environ['XLA_FLAGS'] = f'{flags} {SCHEDULER_FLAG}'.strip()
  cores = min(usable_cores(), MAX_DEVICES)
  if user_chose_count() or cores < 2:
    return 0
  if row_counts and all(devices_for(rows, cores) == 1 for rows in row_counts):
    if os.environ.get('MEMFLAX_ONE_CORE', '1') != '0':
      _keep_to_current_core()
    return 0
  jax.config.update('jax_num_cpu_devices', cores)
  _chosen_by_memflax = True
  return cores


def run_devices(config) -> list:
  """The devices a run of `config` spans: every device, or where memflax chose the CPU
  device count (use_every_core), the most devices that divide both the batch and the
  evaluation's sequence count, so no config has to know the machine's core count."""
  devices = jax.devices()
  if not _chosen_by_memflax or jax.process_count() > 1 or jax.default_backend() != 'cpu':
    return devices
  rows = run_rows(config)
  if rows is None or rows < 1:
    return devices  # config_checks reports the bad value
  return devices[:devices_for(rows, len(devices))]


def run_rows(config) -> int | None:
  """gcd of `config`'s batch and evaluation sequence count, what run_devices splits;
  None for a config without them (config_checks reports bad values)."""
  try:
    return math.gcd(int(config.batch_size), int(config.eval.num_sequences))
  except (TypeError, ValueError, AttributeError, KeyError):
    return None


def devices_for(rows: int, count: int) -> int:
  """How many of `count` devices a run of `rows` rows per step spans: the most that
  divide it (rows = gcd of the batch and the evaluation's sequence count)."""
  return max(d for d in range(1, count + 1) if rows % d == 0) if rows >= 1 else count


def _keep_to_current_core() -> None:
  cores = sorted(os.sched_getaffinity(0))
  core = _current_core()
  os.sched_setaffinity(0, {core if core in cores else cores[0]})


def _current_core() -> int | None:
  """The core this process last ran on (field 39 of /proc/self/stat)."""
  try:
    with open('/proc/self/stat') as f:
      return int(f.read().rsplit(')', 1)[1].split()[36])
  except (OSError, ValueError, IndexError):
    return None
