"""The train state and one jitted, data-parallel training step.

The trainer knows nothing of flows: it gets a loss function `loss_fn(params, batch) -> scalar`. Params
are replicated over a 1-D device mesh ("data") and the batch is sharded along it; jit inserts the
gradient all-reduce. A step whose loss or gradient is not finite leaves params and optimiser untouched
and is counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    bad_streak: jax.Array  # consecutive non-finite steps
    skipped: jax.Array  # non-finite steps in total


def learning_rate_schedule(train: Any) -> optax.Schedule:
    """Adam's rate, multiplied by `lr_decay_factor` every `lr_decay_every` steps (official: 0.5 / 200k)."""
    return optax.exponential_decay(train.learning_rate, train.lr_decay_every, train.lr_decay_factor, staircase=True)


def make_optimizer(train: Any) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(train.grad_clip_norm), optax.adam(learning_rate_schedule(train)))


def init_state(params: Any, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=tx.init(params), rng=rng, bad_streak=zero, skipped=zero)


def make_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    """1-D "data" mesh over `devices` (default: every device of every process). Auto axes: jit inserts the
    collectives (make_mesh's own default is explicit sharding types)."""
    if devices is None:
        return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    return jax.sharding.Mesh(np.asarray(devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def make_train_step(
    loss_fn: Callable,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: jax.sharding.Mesh,
    accum_steps: int = 1,
) -> Callable:
    """-> jitted `step(state, batch) -> (state, metrics)`; `batch` is the global batch, sharded by rows.
    With `accum_steps` > 1 the batch is split into that many micro-batches whose gradients are averaged
    (same update, 1/accum_steps of the activation memory)."""

    def grads_of(params, batch):
        if accum_steps == 1:
            return jax.value_and_grad(loss_fn)(params, batch)
        micro = batch.reshape((accum_steps, batch.shape[0] // accum_steps) + batch.shape[1:])

        def one(acc, mb):
            loss, g = jax.value_and_grad(loss_fn)(params, mb)
            return jax.tree.map(jnp.add, acc, (loss, g)), None

        zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        (loss, g), _ = jax.lax.scan(one, zero, micro)
        return jax.tree.map(lambda a: a / accum_steps, (loss, g))

    def step(state: TrainState, batch: jax.Array):
        loss, grads = grads_of(state.params, batch)
        grad_norm = optax.tree.norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
        new = state.replace(
            step=state.step + 1,
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            bad_streak=jnp.where(ok, 0, state.bad_streak + 1),
            skipped=state.skipped + (~ok).astype(jnp.int32),
        )
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "finite": ok,
            "bad_streak": new.bad_streak,
            "learning_rate": schedule(state.step - state.skipped),  # optimiser steps taken so far
        }
        return new, metrics

    replicated = NamedSharding(mesh, P())
    rows = NamedSharding(mesh, P("data"))
    return jax.jit(step, in_shardings=(replicated, rows), out_shardings=(replicated, replicated), donate_argnums=0)


def global_batch(local: Any, mesh: jax.sharding.Mesh) -> jax.Array:
    """This host's rows -> one global array sharded along the mesh (works on one or many hosts)."""
    return jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Identical host values on every process -> arrays replicated over the mesh (multi-host safe)."""
    sharding = NamedSharding(mesh, P())

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, tree)
