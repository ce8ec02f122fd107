"""The persistent XLA compilation cache, on by default for the command-line tools.

Compiling the NTM's train step takes seconds per padded length on a CPU (more on a busy
one), and the same config is compiled again by every rerun, resume and `eval.py`. JAX
can keep compiled programs on disk keyed by the program, the jax/jaxlib version and the
device; memflax turns that on so nobody needs to know the setting. The directory is
`$MEMFLAX_COMPILATION_CACHE`, else `$XDG_CACHE_HOME/memflax/jax` (default
`~/.cache/memflax/jax`); `MEMFLAX_COMPILATION_CACHE=off` disables it, and a cache
directory the user already configured for JAX is left alone. The cache is trusted code:
keep it in a directory only you can write.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

# Programs faster to compile than this are not worth a disk round trip.
_MIN_COMPILE_SECONDS = 1.0


def default_dir() -> Path | None:
  """Where the cache lives, or None when MEMFLAX_COMPILATION_CACHE=off."""
  chosen = os.environ.get('MEMFLAX_COMPILATION_CACHE', '')
  if chosen.lower() == 'off':
    return None
  if chosen:
    return Path(chosen).expanduser()
  base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
  return Path(base) / 'memflax' / 'jax'


def enable() -> Path | None:
  """Points JAX's persistent compilation cache at default_dir() unless the user set one
  (JAX_COMPILATION_CACHE_DIR or jax.config); returns the directory in use (or None).
  Call before the first compilation."""
  configured = jax.config.jax_compilation_cache_dir
  if configured:
    return Path(configured)
  directory = default_dir()
  if directory is None:
    return None
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError:  # a read-only home: run uncached rather than fail
    return None
  jax.config.update('jax_compilation_cache_dir', str(directory))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', _MIN_COMPILE_SECONDS)
  return directory
