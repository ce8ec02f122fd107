"""Turns the errors a user causes into one line on stderr and a non-zero exit."""

from __future__ import annotations

import contextlib
import re
import sys

from absl import flags

from memflax.checkpoint import IncompatibleCheckpointError
from memflax.config_checks import ConfigError
from memflax.data.corpus_files import CorpusError
from memflax.workdir import WorkdirError

# Exit codes: 0 = done (or --help); 2 = the request is wrong (flags, config, workdir);
# 3 = the run diverged.
USER_ERRORS = (ConfigError, IncompatibleCheckpointError, WorkdirError, CorpusError,
               FileNotFoundError)
HELP_FLAGS = ('--help', '-h', '-?', '--helpshort', '--helpfull')


# What str.splitlines() breaks at: shown escaped, so that a message naming e.g. a path
# with a newline in it stays one line.
_LINE_BREAKS = '\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029'


def _fail(message: str, code: int = 2):
  message = ''.join(repr(c)[1:-1] if c in _LINE_BREAKS else c for c in str(message).strip())
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(code)


def fail(message: str, code: int = 2):
  """Prints `error: message` on stderr and exits with `code` (2: the request is wrong)."""
  _fail(message, code)


def _reason(text: str) -> str:
  """The line of an error message that says why: a wrapped traceback ends with it."""
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  missing = re.search(r'Flag --(\w+) must have a value other than None', text)
  if missing:
    return f'--{missing.group(1)} is required'
  if len(lines) > 1 and lines[0].endswith(':'):
    head, last = lines[0].rstrip(':'), lines[-1]
    return f'{head}: {last.split(": ", 1)[-1] if last.startswith(("ValueError", "TypeError", "KeyError")) else last}'
  return lines[0] if lines else text


def _unresolvable_override(argv: list[str]) -> str | None:
  """The first --config.PATH argument whose PATH the loaded config cannot resolve."""
  from ml_collections.config_flags import config_path
  try:
    config = flags.FLAGS['config'].value
  except Exception:  # pylint: disable=broad-except
    return None
  for arg in argv[1:]:
    name = arg.split('=', 1)[0]
    if name.startswith('--config.'):
      try:
        config_path.get_value(name[len('--config.'):], config)
      except (AttributeError, KeyError, TypeError, IndexError, ValueError):
        return name
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl flags parser for app.run(..., flags_parser=parse_flags): one line per error.

  ml_collections reports an unknown --config.FIELD as a chained KeyError/
  AttributeError traceback; this names the offending argument instead. --help
  prints the usage and exits 0 (absl's own --help exits 1).
  """
  if any(a in HELP_FLAGS for a in argv[1:]):
    main_module = sys.modules['__main__']
    print((main_module.__doc__ or '').strip() + '\n')
    print(flags.FLAGS.main_module_help())
    sys.exit(0)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(_reason(str(e)))
  except TypeError as e:  # --config.A.B=... below a field A that is no section
    culprit = _unresolvable_override(argv)
    _fail(f'unknown config field {culprit!r}' if culprit else _reason(str(e)))
  except (AttributeError, KeyError) as e:
    detail = str(e).replace('\\n', ' ')
    field = re.search(r'[A-Za-z_]\w*', detail).group(0)
    args = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.') and
            a.split('=')[0].endswith('.' + field)]
    hint = re.search(r'Did you mean[^?]*\?', detail)
    _fail(f'unknown config field {args[0] if args else _unresolvable_override(argv) or field!r}'
          + (f'. {hint.group(0)}' if hint else ''))
  except ValueError as e:  # e.g. "Could not parse 'model.x.1'": a path that names no field
    culprit = _unresolvable_override(argv)
    _fail(f'unknown config field {culprit!r}' if culprit else _reason(str(e)))


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
