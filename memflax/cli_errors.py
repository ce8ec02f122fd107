"""Turns the errors a user causes into one line on stderr and a non-zero exit."""

from __future__ import annotations

import contextlib
import sys

from memflax.checkpoint import IncompatibleCheckpointError
from memflax.config_checks import ConfigError

# Exit codes: 2 = the request is wrong (config, workdir); 3 = the run diverged.
USER_ERRORS = (ConfigError, IncompatibleCheckpointError)


@contextlib.contextmanager
def exit_on_user_error():
  from memflax.train import NonFiniteError
  try:
    yield
  except USER_ERRORS as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  except NonFiniteError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(3)
