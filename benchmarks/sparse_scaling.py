"""How training cost grows with the number of memory slots N: dense NTM vs sparse SAM.

  python benchmarks/sparse_scaling.py --out benchmarks/results/sparse_scaling.json
  python benchmarks/sparse_scaling.py --out /tmp/sparse_scaling.json --quick   # < 2 min on a GPU

One training step (forward, backward, Adam update) on a batch of 4 sequences of 100
steps, memory words of 32, for N = 128 … 65,536 slots:
  dense   memflax.models.ntm (every head reads and writes all N rows; plain autodiff
          keeps the step's N×W memories for the backward pass)
  sparse  memflax.models.sam with K = 8 rows per read and its sparse backward pass
          (memflax.nn.sam.run: per step only the J = K + 1 overwritten rows and the K rows
          read are kept, never a memory; on a CPU beyond N = 16,384 the similarity
          scan goes 1,024 rows at a time, so no [B,N] score array exists); --modes can
          add sparse_revert (keeps only the overwritten rows and reverts them going
          backwards) and sparse_autodiff
Each (N, mode) runs in a fresh subprocess, so compile time, peak RSS and the device's
peak memory belong to that configuration alone. Rows:
  {"N", "mode", "step_ms" (median of --repeats timed steps), "step_ms_all", "compile_s",
   "peak_bytes" (compiled.memory_analysis(): arguments + outputs + temporaries − aliased),
   "temp_bytes", "measured_peak_bytes" (device peak_bytes_in_use where the backend reports
   it, else null), "peak_rss_bytes" (process high-water RSS) and "rss_before_bytes",
   "memory_state_bytes" (B·N·W·4: one memory of the batch), "device" (device_kind), ...}
A configuration whose predicted peak exceeds --max-bytes (default: half the free host
memory on CPU, the device's memory on an accelerator), or that fails with
RESOURCE_EXHAUSTED, is recorded with "oom": true instead of timings.

--long-sequence also finds, at the largest N, the longest sequence whose training step
fits in --budget-gib (24) by the compiled memory analysis (binary search over T; nothing
is allocated), dense vs sparse (and sparse_revert, which keeps fewer bytes per step). A log-log plot (step time and peak memory against N)
is written next to --out as a .png.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from memflax import progress_log  # noqa: E402  (imports no jax: the children measure)

BATCH, WIDTH, TOP_K, CONTROLLER, INPUT_BITS = 4, 32, 8, 100, 8
FULL_SIZES = [128 * 2 ** i for i in range(10)]        # 128 … 65,536
QUICK_SIZES = [128, 1024, 8192, 65536]


# --- One configuration (runs in its own process) ---------------------------------


def build(mode: str, n: int):
  from memflax.models import ntm, sam
  if mode == 'dense':
    return ntm.Model(output_size=INPUT_BITS, controller_size=CONTROLLER, memory_size=n,
                     memory_width=WIDTH)
  return sam.Model(output_size=INPUT_BITS, controller_size=CONTROLLER, memory_size=n,
                   memory_width=WIDTH, top_k=TOP_K,
                   backprop=mode.removeprefix('sparse_') if mode != 'sparse' else 'sparse')


def make_step(model):
  """A jitted Adam train step on sigmoid cross-entropy, state donated."""
  import jax
  import optax
  opt = optax.adam(1e-3)

  def step(params, opt_state, inputs, targets):
    def loss_fn(p):
      logits, _ = model.apply({'params': p}, inputs)
      return optax.sigmoid_binary_cross_entropy(logits, targets).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return opt, jax.jit(step, donate_argnums=(0, 1))


def _abstract_inputs(steps: int):
  import jax
  import jax.numpy as jnp
  return (jax.ShapeDtypeStruct((BATCH, steps, INPUT_BITS + 1), jnp.float32),
          jax.ShapeDtypeStruct((BATCH, steps, INPUT_BITS), jnp.float32))


def compiled_bytes(mode: str, n: int, steps: int):
  """-> (compiled step, memory analysis dict, compile seconds) for T = steps."""
  import jax
  model = build(mode, n)
  inputs, targets = _abstract_inputs(steps)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jax.numpy.zeros(
      inputs.shape, inputs.dtype))['params'])
  opt, step = make_step(model)
  opt_state = jax.eval_shape(opt.init, params)
  start = time.perf_counter()
  compiled = step.lower(params, opt_state, inputs, targets).compile()
  compile_s = time.perf_counter() - start
  ma = compiled.memory_analysis()
  mem = dict(argument_bytes=ma.argument_size_in_bytes, output_bytes=ma.output_size_in_bytes,
             temp_bytes=ma.temp_size_in_bytes, alias_bytes=ma.alias_size_in_bytes)
  mem['peak_bytes'] = (mem['argument_bytes'] + mem['output_bytes'] + mem['temp_bytes']
                       - mem['alias_bytes'])
  return compiled, mem, compile_s


def _rss() -> int:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def measure_one(mode: str, n: int, steps: int, repeats: int, max_bytes: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  device = jax.devices()[0]
  row = dict(N=n, mode=mode, T=steps, batch=BATCH, width=WIDTH,
             top_k=TOP_K if mode != 'dense' else None, controller=CONTROLLER,
             memory_state_bytes=BATCH * n * WIDTH * 4, device=device.device_kind,
             platform=device.platform, model='ntm' if mode == 'dense' else 'sam')
  if mode != 'dense':
    row['scan_block'] = build(mode, n).sizes().scan_block  # 0: similarities in one pass
  rss_before = _rss()
  compiled, mem, compile_s = compiled_bytes(mode, n, steps)
  row.update(mem, compile_s=round(compile_s, 3), rss_before_bytes=rss_before)
  if mem['peak_bytes'] > max_bytes:
    row.update(oom=True, oom_reason=f"predicted peak {mem['peak_bytes']} B > limit {max_bytes} B",
               step_ms=None, peak_rss_bytes=None, measured_peak_bytes=None)
    return row
  model = build(mode, n)
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.integers(0, 2, (BATCH, steps, INPUT_BITS + 1)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 2, (BATCH, steps, INPUT_BITS)), jnp.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), inputs)['params']
  opt, _ = make_step(model)
  opt_state = opt.init(params)
  try:
    params, opt_state, loss = compiled(params, opt_state, inputs, targets)  # warm-up
    jax.block_until_ready(loss)
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      params, opt_state, loss = compiled(params, opt_state, inputs, targets)
      jax.block_until_ready(loss)
      times.append(1e3 * (time.perf_counter() - start))
  except Exception as e:  # noqa: BLE001 — an allocator failure is a result here
    if 'RESOURCE_EXHAUSTED' not in str(e) and 'out of memory' not in str(e).lower():
      raise
    row.update(oom=True, oom_reason=str(e).splitlines()[0][:300], step_ms=None)
    return row
  stats = device.memory_stats() or {}
  row.update(oom=False, step_ms=round(statistics.median(times), 3),
             step_ms_all=[round(t, 3) for t in times], loss=float(loss),
             measured_peak_bytes=stats.get('peak_bytes_in_use'),
             # ru_maxrss is in KiB on Linux: the process's high-water mark.
             peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
  return row


def longest_sequence(mode: str, n: int, budget: int, hi: int) -> dict:
  """Largest T (up to hi) whose compiled step peak fits `budget` bytes, by bisection."""
  lo_t, lo_mem = 0, None
  t = 100
  probes = []
  while t <= hi:  # grow ×4 until it no longer fits
    _, mem, _ = compiled_bytes(mode, n, t)
    probes.append((t, mem['peak_bytes']))
    if mem['peak_bytes'] > budget:
      break
    lo_t, lo_mem, t = t, mem['peak_bytes'], t * 4
  up = min(t, hi + 1)
  while up - lo_t > max(1, lo_t // 50):  # to within 2%
    mid = (lo_t + up) // 2
    _, mem, _ = compiled_bytes(mode, n, mid)
    probes.append((mid, mem['peak_bytes']))
    if mem['peak_bytes'] <= budget:
      lo_t, lo_mem = mid, mem['peak_bytes']
    else:
      up = mid
  return dict(N=n, mode=mode, budget_bytes=budget, longest_T=lo_t, peak_bytes_at_T=lo_mem,
              capped_at=hi if lo_t >= hi else None, probes=probes)


# --- Driver ----------------------------------------------------------------------


def default_max_bytes() -> int:
  import jax
  stats = jax.devices()[0].memory_stats() or {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  with open('/proc/meminfo') as f:
    info = {line.split(':')[0]: int(line.split()[1]) * 1024 for line in f}
  return info['MemAvailable'] // 2


def child(args) -> None:
  if args.one_long:
    mode, n = args.one_long.split(':')
    print('RESULT ' + json.dumps(longest_sequence(mode, int(n), int(args.budget_gib * 2 ** 30),
                                                  args.long_max_steps)))
    return
  mode, n = args.one.split(':')
  print('RESULT ' + json.dumps(measure_one(mode, int(n), args.steps, args.repeats,
                                           args.max_bytes)))


def run_child(extra: list[str], timeout: float) -> dict:
  cmd = [sys.executable, __file__, *extra]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
  except subprocess.TimeoutExpired:
    return dict(error=f'timed out after {timeout:.0f} s')
  for line in proc.stdout.splitlines():
    if line.startswith('RESULT '):
      return json.loads(line[len('RESULT '):])
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
  killed = proc.returncode in (-9, 137)
  return dict(oom=True if killed else None, error=f'exit {proc.returncode}: ' + ' | '.join(tail))


def plot(rows: list[dict], path: Path) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
  for mode, style in (('dense', 'o-'), ('sparse', 's-')):
    ok = [r for r in rows if r['mode'] == mode and r.get('step_ms')]
    if ok:
      ax_t.loglog([r['N'] for r in ok], [r['step_ms'] for r in ok], style, label=mode)
    mem = [r for r in rows if r['mode'] == mode and r.get('peak_bytes')]
    if mem:
      ax_m.loglog([r['N'] for r in mem], [r['peak_bytes'] / 2 ** 20 for r in mem], style,
                  label=f'{mode} (compiled peak)')
    oom = [r for r in rows if r['mode'] == mode and r.get('oom')]
    for r in oom:
      ax_t.axvline(r['N'], color='red', alpha=0.3, lw=1)
  state = sorted({(r['N'], r['memory_state_bytes']) for r in rows if 'memory_state_bytes' in r})
  ax_m.loglog([s[0] for s in state], [s[1] / 2 ** 20 for s in state], 'k:', label='one memory state')
  device = next((r['device'] for r in rows if 'device' in r), '?')
  ax_t.set(xlabel='memory slots N', ylabel='train step (ms)',
           title=f'step time, T=100, B=4, W=32 ({device})')
  ax_m.set(xlabel='memory slots N', ylabel='peak memory (MiB)', title='peak memory of one step')
  for ax in (ax_t, ax_m):
    ax.grid(True, which='both', alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def summarise(rows: list[dict]) -> dict:
  """The issue's targets, computed from the rows (None where a figure is missing)."""
  by = {(r['mode'], r['N']): r for r in rows if 'mode' in r}
  n_max = max(r['N'] for r in rows if 'N' in r)
  sparse_max, dense_max = by.get(('sparse', n_max)), by.get(('dense', n_max))
  out = dict(N_max=n_max)
  if sparse_max and sparse_max.get('peak_bytes'):
    out['sparse_peak_over_state_at_N_max'] = sparse_max['peak_bytes'] / sparse_max[
        'memory_state_bytes']
  dense_ok = [r for r in rows if r.get('mode') == 'dense' and r.get('step_ms')]
  if sparse_max and sparse_max.get('step_ms') and dense_max and dense_max.get('step_ms'):
    out['dense_over_sparse_step_time_at_N_max'] = dense_max['step_ms'] / sparse_max['step_ms']
  elif dense_ok:
    largest = max(dense_ok, key=lambda r: r['N'])
    sp = by.get(('sparse', largest['N']))
    out['dense_fits_up_to_N'] = largest['N']
    if sp and sp.get('step_ms'):
      out['dense_over_sparse_step_time_at_largest_dense_N'] = largest['step_ms'] / sp['step_ms']
  lo = by.get(('sparse', 1024))
  if lo and sparse_max and lo.get('peak_bytes') and sparse_max.get('peak_bytes'):
    beyond = lambda r: r['peak_bytes'] - r['memory_state_bytes']
    out['sparse_peak_beyond_state_growth_1024_to_N_max'] = beyond(sparse_max) / beyond(lo)
    # SAM's state is its memory and the per-slot usage (int32): counted as state, the
    # usage no longer shows up as growth.
    beyond_usage = lambda r: beyond(r) - BATCH * r['N'] * 4
    out['sparse_peak_beyond_memory_and_usage_growth_1024_to_N_max'] = (
        beyond_usage(sparse_max) / beyond_usage(lo))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', help='JSON file to write (a .png plot goes next to it)')
  parser.add_argument('--quick', action='store_true',
                      help=f'N in {QUICK_SIZES}, 3 timed steps each (< 2 min on a GPU)')
  parser.add_argument('--sizes', type=str, default='', help='comma-separated N (overrides)')
  parser.add_argument('--modes', type=str, default='dense,sparse',
                      help="comma-separated: dense, sparse, sparse_revert (SAM's reverting "
                           "backward pass), sparse_autodiff (SAM under plain autodiff)")
  parser.add_argument('--steps', type=int, default=100, help='sequence length T')
  parser.add_argument('--repeats', type=int, default=0, help='timed steps (0: 5, quick 3)')
  parser.add_argument('--max-bytes', type=int, default=0,
                      help='skip (as OOM) a step whose compiled peak exceeds this; 0: auto')
  parser.add_argument('--long-sequence', action='store_true',
                      help='also find the longest T that fits --budget-gib at the largest N')
  parser.add_argument('--budget-gib', type=float, default=24.0)
  parser.add_argument('--long-max-steps', type=int, default=1 << 22)
  parser.add_argument('--timeout', type=float, default=900, help='seconds per configuration')
  parser.add_argument('--one', help=argparse.SUPPRESS)
  parser.add_argument('--one-long', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.repeats <= 0:
    args.repeats = 3 if args.quick else 5
  if args.one or args.one_long:
    if not args.max_bytes:
      args.max_bytes = default_max_bytes()
    child(args)
    return
  if not args.out:
    parser.error('--out FILE is required')
  sizes = ([int(s) for s in args.sizes.split(',')] if args.sizes
           else QUICK_SIZES if args.quick else FULL_SIZES)
  modes = args.modes.split(',')
  common = ['--steps', str(args.steps), '--repeats', str(args.repeats)]
  if args.max_bytes:
    common += ['--max-bytes', str(args.max_bytes)]
  rows, started = [], time.perf_counter()
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  partial = out.with_suffix('.partial.json')
  for n in progress_log.bar(sizes, len(sizes), 'memory sizes'):
    for mode in modes:
      row = run_child(['--one', f'{mode}:{n}', *common], args.timeout)
      row.setdefault('N', n)
      row.setdefault('mode', mode)
      row.setdefault('memory_state_bytes', BATCH * n * WIDTH * 4)
      rows.append(row)
      print(json.dumps({k: row.get(k) for k in ('N', 'mode', 'step_ms', 'compile_s',
                                                  'peak_bytes', 'peak_rss_bytes',
                                                  'measured_peak_bytes', 'oom', 'error')}),
            flush=True)
      partial.write_text(json.dumps(rows, indent=1) + '\n')  # survives a killed run
  result = dict(
      command=' '.join(['python', 'benchmarks/sparse_scaling.py', *sys.argv[1:]]),
      settings=dict(batch=BATCH, width=WIDTH, top_k=TOP_K, controller=CONTROLLER, T=args.steps,
                    repeats=args.repeats, quick=args.quick),
      rows=rows)
  if args.long_sequence:
    n = max(sizes)
    result['long_sequence'] = [
        run_child(['--one-long', f'{mode}:{n}', '--budget-gib', str(args.budget_gib),
                   '--long-max-steps', str(args.long_max_steps)], args.timeout)
        for mode in ('dense', 'sparse', 'sparse_revert')]
    for r in result['long_sequence']:
      print(json.dumps({k: r.get(k) for k in ('mode', 'N', 'longest_T', 'peak_bytes_at_T',
                                              'capped_at', 'error')}), flush=True)
  result['summary'] = summarise([r for r in rows if r['mode'] in ('dense', 'sparse')])
  result['wall_s'] = round(time.perf_counter() - started, 1)
  out.write_text(json.dumps(result, indent=1) + '\n')
  plot(rows, out.with_suffix('.png'))
  partial.unlink(missing_ok=True)
  print(json.dumps(result['summary']))
  print(f'wrote {out} and {out.with_suffix(".png")} in {result["wall_s"]} s')


if __name__ == '__main__':
  main()
