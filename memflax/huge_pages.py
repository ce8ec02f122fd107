"""Transparent huge pages for XLA's large CPU buffers: `train.py`, `eval.py` and the
throughput benchmark restart themselves once with glibc's malloc asking for them.

Why: every training step XLA allocates its temporary buffer anew with malloc (it holds
the per-step values a scan keeps for the backward pass: 118 MB for the DNC's 41-step
batch-32 copy step). Above 32 MB glibc maps such a buffer fresh from the kernel, and
the first write to each of its 4 KiB pages faults: 29,000 faults, about 30 ms of that
220 ms step on this CPU. With glibc's tunable `glibc.malloc.hugetlb=1` malloc asks the
kernel for 2 MiB pages on those maps (madvise), and the step faults a few hundred
times. glibc reads its tunables only when a process starts, hence the restart:
`os.execv` of the same interpreter, options and arguments (the process id stays), before
jax is imported. Nothing happens where it cannot help: outside glibc ≥ 2.35 (the
tunable's first release), where the kernel's transparent huge pages are off, when the
tunable is already set, when another program runs the script (runpy, as the fuzz tests'
fork server does), or with MEMFLAX_HUGE_PAGES=0.
"""

from __future__ import annotations

import os
import sys

TUNABLE = 'glibc.malloc.hugetlb=1'
THP_SETTING = '/sys/kernel/mm/transparent_hugepage/enabled'
OPT_OUT = 'MEMFLAX_HUGE_PAGES'


def _glibc_version() -> tuple[int, int] | None:
  try:
    name, version = os.confstr('CS_GNU_LIBC_VERSION').split()
    major, minor = version.split('.')[:2]
    return (int(major), int(minor)) if name == 'glibc' else None
  except (AttributeError, ValueError, OSError):  # not glibc, or no confstr (macOS, Windows)
    return None


def available() -> bool:
  """glibc ≥ 2.35 and the kernel's transparent huge pages not switched off."""
  version = _glibc_version()
  if version is None or version < (2, 35):
    return False
  try:
    with open(THP_SETTING) as f:
      return '[never]' not in f.read()
  except OSError:
    return False


def requested() -> bool:
  """Whether this process was started with the tunable."""
  return TUNABLE in os.environ.get('GLIBC_TUNABLES', '').split(':')


def _started_as_this_program() -> bool:
  """Whether the interpreter's own command line ran this program with these arguments
  (not, say, a tool that runs the script with runpy in a process of its own): only then
  does re-executing `sys.orig_argv` run it again."""
  orig, argv = sys.orig_argv, sys.argv
  count = len(argv) - 1  # the program's arguments
  if len(orig) < count + 2 or orig[len(orig) - count:] != argv[1:]:
    return False
  program, option = orig[len(orig) - count - 1], orig[len(orig) - count - 2]
  if option == '-c':
    return argv[0] == '-c'
  if option == '-m':
    return True
  return os.path.abspath(program) == os.path.abspath(argv[0])


def restart_with_huge_pages() -> None:
  """Re-executes the running program with the tunable, once; returns if it would not help.

  Call it first thing in a script's `if __name__ == '__main__':` block, never from a
  library: it replaces the running process.
  """
  if (requested() or os.environ.get(OPT_OUT) == '0' or not available()
      or not _started_as_this_program()):
    return
  current = os.environ.get('GLIBC_TUNABLES')
  os.environ['GLIBC_TUNABLES'] = f'{current}:{TUNABLE}' if current else TUNABLE
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
