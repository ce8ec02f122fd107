"""The command-line tools keep compiled programs on disk: a rerun compiles nothing new."""

import subprocess
import sys

from conftest import REPO, cli_env

# The full-size NTM: its train step takes seconds to compile, over the cache's threshold.
ARGS = ['--config=configs/ntm_copy.py', '--config.num_train_steps=2',
        '--config.length_buckets=1', '--config.eval.num_sequences=8']


def _train(workdir, **env):
  return subprocess.run([sys.executable, str(REPO / 'train.py'), *ARGS, f'--workdir={workdir}'],
                        cwd=REPO, env={**cli_env(), **env}, capture_output=True, text=True,
                        timeout=900)


def _entries(directory):
  return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_a_rerun_hits_the_cache_and_off_disables_it(tmp_path):
  cache = tmp_path / 'cache'
  first = _train(tmp_path / 'a', MEMFLAX_COMPILATION_CACHE=str(cache))
  assert first.returncode == 0, first.stderr
  written = _entries(cache)
  assert written, 'the first run stored no compiled program'
  second = _train(tmp_path / 'b', MEMFLAX_COMPILATION_CACHE=str(cache))
  assert second.returncode == 0, second.stderr
  # Every program the first run stored was found again: no second entry for any of them.
  # (A program whose compile time straddles the cache's 1 s threshold may be stored by the
  # second run only, on a busy machine: that is new, not recompiled.)
  after = _entries(cache)
  assert set(written) <= set(after)
  added = {name.split('-')[0] for name in set(after) - set(written)}
  assert not added & {name.split('-')[0] for name in written}, (written, after)

  home = tmp_path / 'home'
  third = _train(tmp_path / 'c', MEMFLAX_COMPILATION_CACHE='off', XDG_CACHE_HOME=str(home))
  assert third.returncode == 0, third.stderr
  assert not (home / 'memflax' / 'jax').exists()
