"""train.py's restart with transparent huge pages (memflax/huge_pages.py): it happens
once, keeps the interpreter's options and the arguments, and removes the page faults
of XLA's large per-step buffers."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from memflax import huge_pages

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, *args: str, opt_out: bool = False) -> list[str]:
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  if opt_out:
    env[huge_pages.OPT_OUT] = '0'
  out = subprocess.run([sys.executable, '-u', '-c', textwrap.dedent(code), *args], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=300, check=True)
  return out.stdout.splitlines()


RESTART = """
  import os, sys
  print('start', os.getpid(), os.environ.get('GLIBC_TUNABLES'), '-u' in sys.orig_argv, flush=True)
  from memflax import huge_pages
  huge_pages.restart_with_huge_pages()
  print('running', os.getpid(), sys.argv[1:], huge_pages.requested(), '-u' in sys.orig_argv)
"""


def test_restart_happens_once_and_keeps_options_and_arguments():
  lines = _run(RESTART, 'a', '--b=c')
  starts = [line for line in lines if line.startswith('start')]
  (running,) = [line for line in lines if line.startswith('running')]
  pid = starts[0].split()[1]
  if huge_pages.available():
    assert len(starts) == 2  # the program ran again from the top, once
    assert starts[1].split()[2] == huge_pages.TUNABLE
    assert running == f"running {pid} ['a', '--b=c'] True True"  # same pid, args and -u
  else:
    assert len(starts) == 1
    assert running == f"running {pid} ['a', '--b=c'] False True"


def test_a_script_run_inside_another_program_is_not_restarted(tmp_path):
  # E.g. tests/fuzz_fork_server.py runs train.py with runpy in forked children:
  # re-executing the interpreter's command line would start the server again.
  script = tmp_path / 'script.py'
  script.write_text(textwrap.dedent(RESTART))
  lines = _run(f"""
    import runpy, sys
    sys.argv = [{str(script)!r}, 'x']
    runpy.run_path({str(script)!r}, run_name='__main__')
  """)
  assert sum(line.startswith('start') for line in lines) == 1
  assert lines[-1].split()[2:] == ["['x']", 'False', 'True']


def test_opt_out_runs_without_restart():
  lines = _run(RESTART, opt_out=True)
  assert sum(line.startswith('start') for line in lines) == 1
  assert lines[-1].endswith('[] False True')


FAULTS = """
  import json, resource
  from memflax import huge_pages
  huge_pages.restart_with_huge_pages()
  import jax, jax.numpy as jnp

  def step(x):  # a scan whose backward pass keeps a 41 x 2 MiB stack: a ~90 MB buffer
    def body(c, _):
      c = jnp.tanh(c * 1.01)
      return c, None
    return jax.grad(lambda x: jax.lax.scan(jax.checkpoint(body), x, None, length=41)[0].sum())(x)

  f = jax.jit(step)
  x = jnp.ones((32, 128, 128))
  for _ in range(3):
    jax.block_until_ready(f(x))
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(5):
    jax.block_until_ready(f(x))
  after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  print(json.dumps(dict(faults=(after - before) / 5, requested=huge_pages.requested())))
"""


def test_huge_pages_remove_the_page_faults_of_large_step_buffers():
  plain = json.loads(_run(FAULTS, opt_out=True)[-1])
  # Without them each step touches its fresh ~90 MB buffer page by page (4 KiB each).
  assert plain['faults'] > 10_000 and not plain['requested']
  restarted = json.loads(_run(FAULTS)[-1])
  if huge_pages.available():
    assert restarted['requested'] and restarted['faults'] < plain['faults'] / 10
  else:
    assert restarted == plain | dict(faults=restarted['faults'])
    assert restarted['faults'] > 10_000
