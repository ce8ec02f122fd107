"""Input fuzzing of `train.py` (fault-tolerance issue, point 8), with hypothesis.

The property, asserted for every example: the process prints no Python traceback
('Traceback' nowhere in stderr) and either

  * is refused: exits non-zero with exactly one non-empty stderr line, starting with
    'error:'; and nothing under a workdir that existed before the run changed (paths,
    bytes and modes of the whole tree), or
  * is accepted (only where a test says so, see below): exits 0 having written only
    inside its own workdir, and changed none of the files that were there.

How valid examples stay cheap. Many fuzzed overrides are valid (a small positive
int, a known optimizer name ...). The config tests hold the lock of the example's
workdir (`<workdir>/.lock-0`, memflax.workdir.RunLock) while the run starts, exactly
as a concurrent training would: train.py checks the config, the workdir and the
corpus first and takes the lock last, so a config that passes every check is
refused with `error: workdir ... is in use` before anything is compiled or written.
Every example therefore ends in one error line, and it is the *right* line: an
override that is certainly invalid (an unknown field, a value the flag parser cannot
read) must not get as far as the lock. The only runs accepted and trained are
`test_valid_sizes_train` (small valid sizes, two steps, a workdir holding unrelated
files that must survive unchanged) and the finished run `test_finished_run_is_kept`
reruns on.

What the lock rule cannot see: a config that passes every check but fails later, in
compilation or training (e.g. task.max_length=2**31-1 passes the checks, then the
copy task's batch overflows int32). Size fuzz is therefore biased to values the checks must refuse (zero,
negative, wrong type, beyond 2**31) plus a few small valid ones, and the two accepted
tests train only small valid sizes. data.paths is never fuzzed to '/' or '' (a whole
tree or the standard library: valid, only slow) and data.dir only to places under
the example's temporary directory (never into the repository).

Speed. Each example is one run of train.py, forked from tests/fuzz_fork_server.py,
which imports jax & co. once (a fresh interpreter spends ~3 s on that); two of the
regressions run a real interpreter (conftest.run_cli) to show the fork server hides
nothing. Examples are derandomized (the same ones on every CI run), with no example
database. The hypothesis tests (~500 runs of train.py, 3 of them training) are marked
slow; the regression tests are not. For a longer local hunt, `MEMFLAX_FUZZ_SCALE=N`
multiplies every max_examples by N and `MEMFLAX_FUZZ_RANDOM=1` draws new examples on
every run; `MEMFLAX_FUZZ_LOG=FILE` appends each refused example's arguments and error
line to FILE.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, error_lines, run_cli

NTM = 'configs/ntm_copy.py:tiny'
CL = 'configs/cl_ntm_tasks.py:tiny'
LM = 'configs/lstm_lm.py:tiny'
SCALE = int(os.environ.get('MEMFLAX_FUZZ_SCALE', '1'))


def fuzz_settings(max_examples: int):
  return settings(max_examples=max_examples * SCALE, deadline=None,
                  derandomize=not os.environ.get('MEMFLAX_FUZZ_RANDOM'),
                  database=None, print_blob=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture,
                                         HealthCheck.filter_too_much])


# ------------------------------------------------------------------ running train.py
class ForkServer:
  """Client of tests/fuzz_fork_server.py: run(args, cwd, env) -> CompletedProcess."""

  def __init__(self):
    self.proc = subprocess.Popen([sys.executable, str(REPO / 'tests' / 'fuzz_fork_server.py')],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 cwd=REPO)
    assert json.loads(self.proc.stdout.readline()) == {'ready': True}

  def run(self, *args: str, cwd: Path = REPO, env: dict | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess:
    request = {'args': list(args), 'cwd': str(cwd), 'timeout': timeout,
               'env': {'XLA_FLAGS': None, 'MEMFLAX_COMPILATION_CACHE': 'off', **(env or {})}}
    self.proc.stdin.write(json.dumps(request) + '\n')
    self.proc.stdin.flush()
    reply = json.loads(self.proc.stdout.readline())
    assert not reply['timed_out'], f'train.py {args} still running after {timeout} s'
    return subprocess.CompletedProcess(['train.py', *args], reply['returncode'],
                                       reply['stdout'], reply['stderr'])

  def close(self):
    self.proc.stdin.close()
    self.proc.wait(timeout=30)


@pytest.fixture(scope='module')
def server(tmp_path_factory):
  s = ForkServer()
  # The byte LM builds its corpus before taking the workdir's lock: into one directory
  # shared by the module's examples (built once), unless an override names another.
  s.lm_data_dir = tmp_path_factory.mktemp('lm_data')
  yield s
  s.close()


# ------------------------------------------------------------------ properties
def tree_hash(root: Path) -> dict[str, tuple]:
  """Every path under root (root included) -> (mode, sha256 of the bytes or link target)."""
  def entry(p: Path):
    st_ = p.lstat()
    if stat.S_ISLNK(st_.st_mode):
      return st_.st_mode, os.readlink(p)
    if stat.S_ISREG(st_.st_mode):
      return st_.st_mode, hashlib.sha256(p.read_bytes()).hexdigest()
    return st_.st_mode, None
  if not os.path.lexists(root):
    return {}
  out = {'.': entry(root)}
  if root.is_dir() and not root.is_symlink():
    for parent, dirs, files in os.walk(root):
      for name in dirs + files:
        p = Path(parent) / name
        out[str(p.relative_to(root))] = entry(p)
  return out


def assert_refused(proc: subprocess.CompletedProcess) -> str:
  """No traceback; a non-zero exit with one 'error:' line. Returns that line."""
  assert 'Traceback' not in proc.stderr, proc.stderr
  lines = error_lines(proc)
  assert proc.returncode != 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
  assert len(lines) == 1 and lines[0].startswith('error:'), proc.stderr
  if os.environ.get('MEMFLAX_FUZZ_LOG'):  # what the examples were refused for, to audit them
    with open(os.environ['MEMFLAX_FUZZ_LOG'], 'a') as log:
      log.write(json.dumps({'args': proc.args, 'error': lines[0][:300]}) + '\n')
  return lines[0]


IN_USE = 'is in use by a running training'


class Held:
  """Holds `<workdir>/.lock-0` as a running training would, so that a config that passes
  every check is refused at the lock instead of training."""

  def __init__(self, workdir: Path):
    workdir.mkdir(parents=True, exist_ok=True)
    self.file = (workdir / '.lock-0').open('a+')
    fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    self.file.seek(0)
    self.file.truncate()
    self.file.write('pid 1\n')
    self.file.flush()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.file.close()


# ------------------------------------------------------------------ the configs' fields
def load_config(spec: str) -> ml_collections.ConfigDict:
  path, variant = (spec.split(':') + [''])[:2]
  module_spec = importlib.util.spec_from_file_location('fuzzed_config', REPO / path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant)


def leaf_fields(config, prefix: str = '') -> dict[str, object]:
  """'a.b.c' -> default value, for every leaf of the config."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(leaf_fields(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


NTM_FIELDS = leaf_fields(load_config(NTM))
CL_FIELDS = leaf_fields(load_config(CL))
LM_FIELDS = leaf_fields(load_config(LM))
# Each field is fuzzed in one config: the harness and NTM fields with the NTM, what only
# the continual and the byte-LM configs have with those.
FIELDS = ([(NTM, f) for f in NTM_FIELDS]
          + [(CL, f) for f in CL_FIELDS if f not in NTM_FIELDS]
          + [(LM, f) for f in LM_FIELDS if f not in NTM_FIELDS])
DEFAULTS = {**NTM_FIELDS, **CL_FIELDS, **LM_FIELDS}

# ------------------------------------------------------------------ values
# What argv can carry: no NUL, no lone surrogates.
TEXT = st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\x00'),
               max_size=24)
HUGE = [2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30, 10**400]
JUNK = st.sampled_from([
    '', ' ', 'abc', 'None', 'null', 'nan', '-nan', 'inf', '-inf', '1e400', '-1e400', '1e-400',
    '0x10', '1_000', '1e3', '3.0', '1.5', '-0', '+5', '[1, 2]', '[]', '(1,)', '()', '{}',
    "{'a': 1}", 'true', 'True', 'false', 'FALSE', 'yes', 'no', '"quoted"', "'q'", '\\', '=',
    ',', ',,', ' , ', '\n', 'a\nb', '\t', 'é', '\U0001f4a5', '9' * 5000, 'a' * 5000,
    '../../etc', '/', '~', '$HOME', '%s', '{}{}', 'copy,copy', 'adam\n'])
INTS = st.one_of(st.integers(-3, 4), st.sampled_from(HUGE), st.sampled_from(HUGE).map(lambda v: -v),
                 st.integers()).map(str)
FLOATS = st.one_of(st.floats().map(repr), st.sampled_from(['1e308', '-1e308', '5e-324', '1e-300',
                                                           '0.0', '-0.0', '0.5', '1.0', '2.0']))
BOOLS = st.sampled_from(['true', 'false', '1', '0', 't', 'f', 'maybe', '2', '-1', 'on', 'off'])


def _sequence(items):
  return st.tuples(st.lists(items, max_size=4), st.sampled_from(['({})', '[{}]', '{}', '({},)'])
                   ).map(lambda t: t[1].format(', '.join(t[0])))


def _names_nothing(value: str) -> bool:
  """A data.paths value naming no existing file: '/' or '' (the standard library) would
  make the byte LM read a whole tree, which is valid, only slow."""
  items = [i.strip() for i in value.split(',') if i.strip()]
  return bool(items) and not any(i.startswith(('/', '.', '~')) or os.path.lexists(REPO / i)
                                 for i in items)


def values_for(field: str) -> st.SearchStrategy[str]:
  """Strings for --config.FIELD=..., biased to the wrong type and bad sizes for the field's
  default. '{tmp}' in a value is the example's own temporary directory."""
  default = DEFAULTS[field]
  anything = st.one_of(JUNK, TEXT, INTS, FLOATS, BOOLS)
  if field == 'data.paths':
    return anything.filter(_names_nothing)
  if field == 'data.dir':  # where the corpus is built: never into the repository
    return st.sampled_from(['', '{tmp}/data', '{tmp}/a_file', '{tmp}/a_file/data'])
  if isinstance(default, bool):
    return st.one_of(BOOLS, anything)
  if isinstance(default, int):
    return st.one_of(INTS, INTS, anything)
  if isinstance(default, float):
    return st.one_of(FLOATS, INTS, anything)
  if isinstance(default, tuple):
    return st.one_of(_sequence(INTS), _sequence(st.one_of(FLOATS, JUNK)), anything)
  return st.one_of(TEXT, JUNK, anything)  # str


FIELD_NAME = st.text(st.sampled_from('abcdefghijklmnopqrstuvwxyz_0123456789'), min_size=1,
                     max_size=12)


@st.composite
def overrides(draw, spec: str, field: str | None = None) -> list[str]:
  """One to three `--config.X=Y`: fields of `spec`'s config with fuzzed values, unknown
  and nested-unknown fields."""
  fields = {NTM: NTM_FIELDS, CL: CL_FIELDS, LM: LM_FIELDS}[spec]
  out = []
  if field is not None:
    out.append(f'--config.{field}={draw(values_for(field))}')
  for _ in range(draw(st.integers(0 if field else 1, 2))):
    kind = draw(st.sampled_from(['field'] * 6 + ['unknown', 'nested']))
    if kind == 'field':
      name = draw(st.sampled_from(sorted(fields)))
      out.append(f'--config.{name}={draw(values_for(name))}')
    elif kind == 'unknown':
      out.append(f'--config.{draw(FIELD_NAME)}={draw(INTS)}')
    else:  # below an existing section or leaf, or below an unknown one
      section = draw(st.sampled_from(sorted({n.rsplit('.', 1)[0] for n in fields} | set(fields))))
      out.append(f'--config.{section}.{draw(FIELD_NAME)}={draw(JUNK)}')
  return out


def certainly_invalid(args: list[str]) -> bool:
  """An override no check can accept: a field the config does not have."""
  for a in args:
    name = a.split('=', 1)[0][len('--config.'):]
    if name not in DEFAULTS:
      return True
  return False


def check_config_run(server, tmp_path: Path, spec: str, args: list[str]) -> None:
  workdir = tmp_path / 'run'
  data_dir = [f'--config.data.dir={server.lm_data_dir}'] if spec == LM else []
  args = [a.replace('{tmp}', str(tmp_path)) for a in args]
  (tmp_path / 'a_file').write_text('not a directory')
  with Held(workdir):
    before = tree_hash(workdir)
    proc = server.run(f'--config={spec}', f'--workdir={workdir}', *data_dir, *args,
                      env={'HOME': str(tmp_path / 'home')})
    line = assert_refused(proc)
    assert tree_hash(workdir) == before, line
  if spec != LM:  # (an LM override may set data.dir='', the default under ~/.cache)
    assert not (tmp_path / 'home').exists(), line
  if certainly_invalid(args):
    assert IN_USE not in line, (args, line)


# ------------------------------------------------------------------ config fuzzing
@pytest.mark.slow
@pytest.mark.parametrize('spec, field', FIELDS, ids=[f'{s.split("/")[1].split(".")[0]}-{f}'
                                                      for s, f in FIELDS])
def test_every_field(server, tmp_path_factory, spec, field):
  @fuzz_settings(2)
  @given(args=overrides(spec, field))
  def run(args):
    check_config_run(server, tmp_path_factory.mktemp('f'), spec, args)
  run()


@pytest.mark.slow
@pytest.mark.parametrize('spec', [NTM, CL, LM])
@fuzz_settings(20)
@given(data=st.data())
def test_random_overrides(server, tmp_path_factory, spec, data):
  args = data.draw(overrides(spec))
  check_config_run(server, tmp_path_factory.mktemp('o'), spec, args)


TASK_KEYS = sorted(load_config(CL).continual.task_fields.keys())


@pytest.mark.slow
@fuzz_settings(25)
@given(tasks=st.one_of(
    JUNK, TEXT,
    st.lists(st.one_of(st.sampled_from(TASK_KEYS), st.sampled_from(['', ' ', 'copy ', 'COPY',
                                                                    'byte_lm', 'ntm']), TEXT),
             max_size=5).map(','.join)))
def test_continual_task_lists(server, tmp_path_factory, tasks):
  check_config_run(server, tmp_path_factory.mktemp('t'), CL, [f'--config.continual.tasks={tasks}'])


# ------------------------------------------------------------------ workdirs
NAME = st.one_of(
    st.sampled_from(['checkpoints', 'metrics.jsonl', '.lock-0', 'snapshots', 'tasks',
                     'continual.json', 'eval.json', 'events.out.tfevents.0.host', '1', '10',
                     '0_copy', '_CHECKPOINT_METADATA', 'tmp', '.hidden']),
    st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\x00/'),
            min_size=1, max_size=12).filter(lambda n: n not in ('.', '..')))
ENTRY = st.tuples(st.lists(NAME, min_size=1, max_size=3).map('/'.join),
                  st.sampled_from(['file', 'file', 'dir', 'symlink']),
                  st.binary(max_size=128), st.sampled_from([0o000, 0o400, 0o644, 0o755, 0o4755]))


def make_tree(root: Path, entries) -> None:
  """Files, directories and relative symlinks (possibly dangling or looping) under root."""
  root.mkdir(parents=True, exist_ok=True)
  for rel, kind, data, mode in entries:
    path = root / rel
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      if os.path.lexists(path):
        continue
      if kind == 'file':
        path.write_bytes(data)
        path.chmod(mode)
      elif kind == 'dir':
        path.mkdir()
      else:  # to a name of the tree, or to one that does not exist
        os.symlink(data.decode('latin-1').replace('\x00', '') or rel.split('/')[0], path)
    except OSError:  # a parent is a file or a dangling link, a name too long, ...
      continue


def check_refused_keeps(server, workdir: Path, args: list[str], spec: str = NTM) -> str:
  """Runs with the workdir's lock held where it can be; the run must be refused and
  leave the workdir's tree exactly as it was."""
  try:
    held = Held(workdir)
  except OSError:  # .lock-0 is a directory, a dangling link ...: the run cannot lock it either
    held = None
  try:
    before = tree_hash(workdir)
    proc = server.run(f'--config={spec}', f'--workdir={workdir}', *args,
                      env={'HOME': str(workdir.parent / 'home')})
    line = assert_refused(proc)
    assert tree_hash(workdir) == before, line
  finally:
    if held is not None:
      held.__exit__()
  return line


@pytest.mark.slow
@fuzz_settings(20)
@given(entries=st.lists(ENTRY, max_size=8), spec=st.sampled_from([NTM, CL]),
       args=st.sampled_from([[], ['--config.batch_size=0'], ['--config.model.memory_size=x'],
                             ['--config.continual.tasks=']]))
def test_workdir_holding_other_files(server, tmp_path_factory, entries, spec, args):
  """A directory of unrelated files (some named like a run's), with a valid or a bad config."""
  if spec == NTM and 'continual' in ''.join(args):
    args = []
  workdir = tmp_path_factory.mktemp('w') / 'run'
  make_tree(workdir, entries)
  check_refused_keeps(server, workdir, args, spec)


@pytest.mark.slow
@fuzz_settings(10)
@given(kind=st.sampled_from(['file', 'below_file', 'dangling_symlink', 'symlink_to_file',
                             'long_name', 'fifo', 'unknown_user']),
       data=st.binary(max_size=64), spec=st.sampled_from([NTM, CL]))
def test_workdir_that_is_no_directory(server, tmp_path_factory, kind, data, spec):
  root = tmp_path_factory.mktemp('nd')
  (root / 'f').write_bytes(data)
  workdir = {'file': root / 'f', 'below_file': root / 'f' / 'run',
             'dangling_symlink': root / 'link', 'symlink_to_file': root / 'link',
             'long_name': root / ('x' * 300), 'fifo': root / 'fifo',
             'unknown_user': '~no_such_user_memflax/run'}[kind]
  if kind == 'dangling_symlink':
    os.symlink(root / 'missing', root / 'link')
  elif kind == 'symlink_to_file':
    os.symlink(root / 'f', root / 'link')
  elif kind == 'fifo':
    os.mkfifo(root / 'fifo')
  before = tree_hash(root)
  proc = server.run(f'--config={spec}', f'--workdir={workdir}', env={'HOME': str(root / 'home')})
  line = assert_refused(proc)
  assert 'workdir' in line, line
  assert tree_hash(root) == before, line


@pytest.fixture(scope='module')
def finished_run(server, tmp_path_factory):
  """A finished 1-step tiny NTM run: checkpoint, metrics, TensorBoard events."""
  workdir = tmp_path_factory.mktemp('finished') / 'run'
  proc = server.run(NTM_ARG, f'--workdir={workdir}', '--config.num_train_steps=1',
                    '--config.length_buckets=1', '--config.log.images=false',
                    '--config.eval.num_sequences=8', timeout=300)
  assert proc.returncode == 0, proc.stderr
  return workdir


NTM_ARG = f'--config={NTM}'


@pytest.mark.slow
@fuzz_settings(15)
@given(args=overrides(NTM), entries=st.lists(ENTRY, max_size=3))
def test_finished_run_is_kept(server, finished_run, tmp_path_factory, args, entries):
  """Reruns on a copy of a finished run's workdir (plus a few unrelated files): refused,
  by a config check, a checkpoint check or, where it would resume, the lock."""
  workdir = tmp_path_factory.mktemp('fin') / 'run'
  shutil.copytree(finished_run, workdir, symlinks=True)
  make_tree(workdir, entries)
  check_refused_keeps(server, workdir, args)


# ------------------------------------------------------------------ corpus files
@pytest.mark.slow
@fuzz_settings(20)
@given(content=st.one_of(
    st.binary(max_size=2048),
    st.text(st.characters(blacklist_categories=('Cs',)), max_size=600).map(str.encode),
    st.tuples(st.binary(max_size=8), st.text(max_size=200)).map(
        lambda t: (t[1] * 20).encode('utf-8', 'surrogatepass') + t[0])),
    name=st.sampled_from(['corpus.txt', 'corpus.py', 'c o,rpus', 'ü.md', '.hidden.py']),
    as_dir=st.booleans())
def test_random_bytes_as_corpus(server, tmp_path_factory, content, name, as_dir):
  """Random bytes as the byte LM's corpus (`data.paths`, a file or a directory holding it):
  a binary, empty, too short or unnamed file is refused with one line; text long enough
  is built (into a data dir of its own, outside the workdir) and then refused at the lock."""
  root = tmp_path_factory.mktemp('c')
  (root / 'src').mkdir()
  corpus = root / 'src' / name
  corpus.write_bytes(content)
  paths = corpus.parent if as_dir else corpus
  workdir = root / 'run'
  with Held(workdir):
    before, source = tree_hash(workdir), tree_hash(root / 'src')
    proc = server.run(f'--config={LM}', f'--workdir={workdir}', f'--config.data.paths={paths}',
                      '--config.data.suffixes=.txt,.py,.md', f'--config.data.dir={root / "data"}',
                      env={'HOME': str(root / 'home')})
    line = assert_refused(proc)
    assert tree_hash(workdir) == before, line
  assert tree_hash(root / 'src') == source
  assert not (root / 'home').exists(), line


# ------------------------------------------------------------------ accepted runs
SMALL_VALID = {
    'batch_size': st.integers(1, 3), 'num_train_steps': st.integers(0, 2),
    'checkpoint_every_steps': st.integers(1, 3), 'eval_every_steps': st.integers(1, 3),
    'log_every_steps': st.integers(1, 3), 'keep_checkpoints': st.integers(1, 2),
    'length_buckets': st.integers(1, 2), 'lr_warmup_steps': st.integers(0, 3),
    'seed': st.sampled_from([-2**63, -1, 0, 2**32, 2**63 - 1]),
    'eval.num_sequences': st.integers(1, 3),
    'eval.lengths': st.lists(st.integers(1, 6), min_size=1, max_size=2).map(
        lambda v: f'({",".join(map(str, v))},)'),
    'model.memory_size': st.integers(1, 4), 'model.memory_width': st.integers(1, 3),
    'model.controller_size': st.integers(1, 4), 'model.num_read_heads': st.integers(1, 2),
    'task.max_length': st.integers(1, 3), 'task.num_bits': st.integers(1, 3),
    'log.tensorboard': st.booleans().map(str), 'log.images': st.booleans().map(str),
}


@st.composite
def small_valid_overrides(draw) -> list[str]:
  names = draw(st.lists(st.sampled_from(sorted(SMALL_VALID)), min_size=1, max_size=6,
                        unique=True))
  return [f'--config.{n}={draw(SMALL_VALID[n])}' for n in names]


USER_ENTRY = st.tuples(
    st.lists(st.text(st.sampled_from('abcxyz é.-_'), min_size=1, max_size=8).map(
        lambda n: 'user ' + n), min_size=1, max_size=2).map('/'.join),
    st.sampled_from(['file', 'dir']), st.binary(max_size=64), st.sampled_from([0o400, 0o644]))


@pytest.mark.slow
@fuzz_settings(2)
@given(args=small_valid_overrides(), entries=st.lists(USER_ENTRY, max_size=3))
def test_valid_sizes_train(server, tmp_path_factory, args, entries):
  """Small valid sizes, no lock held: the run trains (a step or two) and writes only inside
  its workdir (given relative to the directory it runs in), keeping the files there."""
  root = tmp_path_factory.mktemp('ok')
  make_tree(root / 'run', entries)
  before = tree_hash(root)
  # Cheaper defaults first (one compiled step shape, no image tracer); a drawn override wins.
  proc = server.run(f'--config={REPO / "configs/ntm_copy.py"}:tiny', '--workdir=run',
                    '--config.length_buckets=1', '--config.log.images=false', *args,
                    '--config.num_train_steps=2', cwd=root, env={'HOME': str(root / 'home')},
                    timeout=300)
  assert 'Traceback' not in proc.stderr, proc.stderr
  if proc.returncode:
    assert_refused(proc)  # e.g. min_length > max_length
    assert tree_hash(root) == before
    return
  assert 'done:' in proc.stdout, proc.stdout
  after = tree_hash(root)
  assert {k: v for k, v in after.items() if k in before} == before  # nothing changed ...
  assert all(k.startswith('run/') for k in set(after) - set(before))  # ... only added in run/


# ------------------------------------------------------------------ regressions
# Inputs fuzzing found that once ended in a traceback (or several lines), each with the
# line it must end in now.
def _cl(*args):
  return [f'--config={CL}', *args]


def _ntm(*args):
  return [f'--config={NTM}', *args]


REGRESSIONS = [
    # tasks.build's ValueError came out of the continual runner's Sequence as a traceback.
    (_cl('--config.continual.task_fields.associative_recall.max_items=0'),
     'error: continual.task_fields.associative_recall: task.min_items (2) and task.max_items (0)'),
    (_cl('--config.continual.task_fields.repeat_copy.min_repeats=0'),
     'error: continual.task_fields.repeat_copy: task.min_repeats (0)'),
    # OverflowError while tracing the model with a size beyond int64.
    (_ntm('--config.model.memory_size=18446744073709551616'),
     'error: model.memory_size must be a positive integer (below 2**31), got 18446744073709551616'),
    # OverflowError in jax.random.PRNGKey (the Trainer, after every check had passed).
    (_ntm('--config.seed=9223372036854775808'),
     'error: seed must be an integer in [-2**63, 2**63), got 9223372036854775808'),
    # Passed the checks, then failed in jax.random after the workdir was created and locked
    # (NotImplementedError: random bits array of size exceeding 2 ** 64).
    (_ntm('--config.batch_size=9223372036854775807'),
     'error: batch_size must be an integer >= 1 (and below 2**31), got 9223372036854775807'),
    (_ntm('--config.eval.num_sequences=9223372036854775807'),
     'error: eval.num_sequences 9223372036854775807 must be a positive multiple'),
    # The flags parser: TypeError below a str field; AttributeError below an int field
    # named the field 'Attribute'; a path that is no Python expression.
    (_ntm('--config.curriculum.kind._='), "error: unknown config field '--config.curriculum.kind._'"),
    (_ntm('--config.seed.x=1'), "error: unknown config field '--config.seed.x'"),
    (_ntm('--config.task.name.1=True'), "error: unknown config field '--config.task.name.1'"),
    (_ntm('--config.model.x-y=2'), "error: unknown config field '--config.model.x-y'"),
    # 2·shift_range + 1 rolls traced one by one: the config check's probe ran for hours.
    (_ntm('--config.model.shift_range=2147483647'),
     'error: model.shift_range must be an integer in [0, model.memory_size=16], got 2147483647'),
    # Warnings of the model probe in config_checks printed lines before the one line.
    (_ntm('--config.model.controller_forget_bias=1e308'), IN_USE),
    ([f'--config={LM}', '--config.model.hidden_size=2147483647'], IN_USE),
]


@pytest.mark.parametrize('args, expected', REGRESSIONS, ids=[a[-1] for a, _ in REGRESSIONS])
def test_regression(server, tmp_path, args, expected):
  workdir = tmp_path / 'run'
  if LM in args[0]:
    args = [*args, f'--config.data.dir={server.lm_data_dir}']
  with Held(workdir):
    before = tree_hash(workdir)
    line = assert_refused(server.run(*args, f'--workdir={workdir}'))
    assert tree_hash(workdir) == before
  assert expected in line, line


def _workdir_case(root: Path, case: str) -> Path:
  (root / 'f').write_text('x')
  if case == 'dangling_symlink':
    os.symlink(root / 'missing', root / 'link')
    return root / 'link'
  if case == 'lock_is_a_directory':
    (root / 'run' / '.lock-0').mkdir(parents=True)
    return root / 'run'
  if case == 'newline_in_path':
    return root / 'f' / 'a\nb'
  return root / ('x' * 300)  # name too long


WORKDIR_REGRESSIONS = [
    # FileExistsError from workdir.mkdir(exist_ok=True) on the link.
    ('dangling_symlink', 'is a symbolic link to'),
    # IsADirectoryError from RunLock opening <workdir>/.lock-0.
    ('lock_is_a_directory', 'cannot lock workdir'),
    # OSError ENAMETOOLONG from Path.exists() in workdir.resolve.
    ('name_too_long', 'File name too long'),
    # A message naming a path with a newline: two lines on stderr.
    ('newline_in_path', 'a\\nb'),
]


@pytest.mark.parametrize('case, expected', WORKDIR_REGRESSIONS)
def test_workdir_regression(server, tmp_path, case, expected):
  workdir = _workdir_case(tmp_path, case)
  before = tree_hash(tmp_path)
  line = assert_refused(server.run(f'--config={NTM}', f'--workdir={workdir}'))
  assert expected in line, line
  assert tree_hash(tmp_path) == before


def test_unknown_user_workdir(server, tmp_path):
  # RuntimeError from Path.expanduser in workdir.resolve.
  line = assert_refused(server.run(f'--config={REPO / NTM}', '--workdir=~no_such_user_memflax/run',
                                   cwd=tmp_path))
  assert 'Could not determine home directory' in line, line
  assert not any(tmp_path.iterdir())


@pytest.mark.parametrize('args, expected', [
    (_cl('--config.continual.task_fields.associative_recall.max_items=0'),
     'error: continual.task_fields.associative_recall: task.min_items (2)'),
    (_ntm('--config.seed=9223372036854775808'), 'error: seed must be an integer'),
])
def test_regression_real_interpreter(tmp_path, args, expected):
  """Two of the regressions through a fresh `python train.py`, as a user runs it: the fork
  server must not hide anything an interpreter prints on its own (import warnings ...)."""
  proc = run_cli('train.py', *args, f'--workdir={tmp_path / "run"}')
  assert expected in assert_refused(proc)
  assert not (tmp_path / 'run').exists()
