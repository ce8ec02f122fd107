"""Turns the errors a user causes into one line on stderr and a non-zero exit."""

from __future__ import annotations

import contextlib
import re
import sys

from absl import flags

from memflax.checkpoint import IncompatibleCheckpointError
from memflax.config_checks import ConfigError

# Exit codes: 2 = the request is wrong (flags, config, workdir); 3 = the run diverged.
USER_ERRORS = (ConfigError, IncompatibleCheckpointError, FileNotFoundError)


def _fail(message: str, code: int = 2):
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flags parser for app.run(..., flags_parser=parse_flags): one line per error.

  ml_collections reports an unknown --config.FIELD as a chained KeyError/
  AttributeError traceback; this names the offending argument instead.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except (AttributeError, KeyError) as e:
    detail = str(e).replace('\\n', ' ')
    field = re.search(r'[A-Za-z_]\w*', detail).group(0)
    args = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.') and
            a.split('=')[0].endswith('.' + field)]
    hint = re.search(r'Did you mean[^?]*\?', detail)
    _fail(f'unknown config field {args[0] if args else field!r}'
          + (f'. {hint.group(0)}' if hint else ''))
  except ValueError as e:
    _fail(str(e).splitlines()[0])


def loaded_config(flag_name: str = 'config'):
  """The value of a config_file flag, or one error line if the file could not be loaded."""
  config = flags.FLAGS[flag_name].value
  try:
    config.keys()  # ml_collections defers a load failure to the first access
  except OSError as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    _fail(f'cannot load --{flag_name}={flags.FLAGS[flag_name].config_filename}: {lines[-1]}')
  return config


@contextlib.contextmanager
def exit_on_user_error():
  from memflax.train import NonFiniteError
  try:
    yield
  except USER_ERRORS as e:
    _fail(str(e))
  except NonFiniteError as e:
    _fail(str(e), code=3)
