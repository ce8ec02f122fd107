"""Devices, mesh and the data-parallel step: the pmap pattern written with shard_map.

One 1-D mesh axis, `data`, spans every device of every process. A step is written
as per-device code (it sees its slice of the batch) and averages gradients with
`lax.pmean(..., 'data')`; `jax.shard_map` under `jax.jit` runs it on 1 CPU, 8 fake
CPU devices, a GPU, a TPU slice or several hosts alike. (`jax.pmap` is in
maintenance mode and is itself built on jit + shard_map.)
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int,
                           cpu_collectives: str = 'gloo', stop_on_lost_process: bool = True) -> None:
  """Joins a multi-process run; call before any other JAX call.

  On CPU the cross-process collectives need an implementation (gloo) chosen
  before the backend starts; on GPU/TPU the setting is ignored.

  If a process of the run dies, every other one stops within
  `peer_watchdog.BOUND_S` seconds with one `error: lost ...` line on stderr and a
  non-zero status (memflax.peer_watchdog; `stop_on_lost_process=False` keeps only the
  shorter heartbeat timeout and leaves jax's own report and exit as they are).
  Rerunning every process with the same command resumes from the last checkpoint.
  """
  from memflax import peer_watchdog
  jax.config.update('jax_cpu_collectives_implementation', cpu_collectives)
  if stop_on_lost_process:
    peer_watchdog.install(coordinator_address, num_processes, process_id)
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             heartbeat_timeout_seconds=peer_watchdog.HEARTBEAT_TIMEOUT_S)


def make_mesh(devices=None) -> Mesh:
  """A 1-D `data` mesh over `devices` (default: all devices of all processes)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`."""
  return NamedSharding(mesh, P(DATA_AXIS))


def data_parallel(per_device_fn: Callable, mesh: Mesh, out_specs=(P(), P()),
                  in_specs=(P(), P(DATA_AXIS))) -> Callable:
  """Wraps `per_device_fn(replicated, batch) -> outputs` as a shard_map over `data`.

  By default the first argument and the outputs are replicated (per-device code must
  make them identical, e.g. by `lax.pmean` of gradients and metrics) and `batch` leaves
  are split along their leading axis; state kept per batch row (a model's external
  store) is passed with P(DATA_AXIS) in `in_specs`/`out_specs`.
  """
  # check_vma=False: models build constant initial carries (device-invariant) that
  # scans turn into per-device values; models should not have to know mesh axes.
  # Replication of the outputs is guaranteed by the explicit pmeans instead.
  return jax.shard_map(per_device_fn, mesh=mesh, in_specs=in_specs,
                       out_specs=out_specs, check_vma=False)


def global_batch(local_rows, mesh: Mesh) -> jax.Array:
  """This process's rows of a global batch (numpy [B/P, ...]) -> one array [B, ...] split
  over `data`. Every process passes its own block of rows, in process order."""
  sharding = batch_sharded(mesh)
  global_shape = (local_rows.shape[0] * jax.process_count(), *local_rows.shape[1:])
  return jax.make_array_from_process_local_data(sharding, local_rows, global_shape)
