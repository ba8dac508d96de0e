"""The train state and one jitted, data-parallel training step.

The step knows nothing of flows: it gets a loss function `loss_fn(params, batch) -> scalar`. Params are
replicated over a 1-D device mesh ("data") and the batch is sharded along it; jit inserts the gradient
all-reduce. A step whose loss or gradient is not finite leaves params and optimiser untouched.

Dynamic loss scaling (float16 training): the loss is multiplied by `loss_scale` before the gradient and
the gradient divided after, so small gradients do not underflow in float16. A step whose gradient
overflows (loss finite, gradient not) halves the scale and is skipped; `scale_period` finite steps in a
row double it. Only a non-finite loss (or an overflow at scale 1) counts as divergence (`bad_streak`).
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
    bad_streak: jax.Array  # consecutive diverged steps
    skipped: jax.Array  # skipped steps in total (diverged or overflowed)
    loss_scale: jax.Array  # 1 unless dynamic loss scaling is on
    good_steps: jax.Array  # finite steps since the loss scale last changed


def init_state(params: Any, tx: optax.GradientTransformation, rng: jax.Array, loss_scale: float = 1.0) -> TrainState:
    zero = jnp.zeros((), jnp.int32)
    return TrainState(
        step=zero,
        params=params,
        opt_state=tx.init(params),
        rng=rng,
        bad_streak=zero,
        skipped=zero,
        loss_scale=jnp.asarray(loss_scale, jnp.float32),
        good_steps=zero,
    )


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
    dynamic_scale: bool = False,
    scale_period: int = 2000,
) -> Callable:
    """-> jitted `step(state, batch) -> (state, metrics)`; `batch` is the global batch, sharded by rows.
    With `accum_steps` > 1 the batch is split into that many micro-batches whose gradients are averaged
    (same update, 1/accum_steps of the activation memory). `dynamic_scale`: float16 loss scaling."""

    def grads_of(params, batch, scale):
        scaled = jax.value_and_grad(lambda p, b: loss_fn(p, b) * scale)
        if accum_steps == 1:
            loss, g = scaled(params, batch)
        else:
            micro = jax.tree.map(lambda a: a.reshape((accum_steps, a.shape[0] // accum_steps) + a.shape[1:]), batch)

            def one(acc, mb):
                return jax.tree.map(jnp.add, acc, scaled(params, mb)), None

            zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
            (loss, g), _ = jax.lax.scan(one, zero, micro)
            loss, g = jax.tree.map(lambda a: a / accum_steps, (loss, g))
        return jax.tree.map(lambda a: a / scale, (loss, g))

    def step(state: TrainState, batch: jax.Array):
        scale = state.loss_scale
        loss, grads = grads_of(state.params, batch, scale)
        grad_norm = optax.tree.norm(grads)
        loss_ok, grads_ok = jnp.isfinite(loss), jnp.isfinite(grad_norm)
        ok = loss_ok & grads_ok
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
        if dynamic_scale:
            overflow = loss_ok & ~grads_ok
            grow = ok & (state.good_steps + 1 >= scale_period)
            new_scale = jnp.where(overflow, scale / 2, jnp.where(grow, scale * 2, scale))
            good_steps = jnp.where(ok & ~grow, state.good_steps + 1, 0)
            diverged = ~loss_ok | (overflow & (scale <= 1.0))
        else:
            new_scale, good_steps, diverged = scale, state.good_steps, ~ok
        new = state.replace(
            step=state.step + 1,
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            bad_streak=jnp.where(diverged, state.bad_streak + 1, 0),
            skipped=state.skipped + (~ok).astype(jnp.int32),
            loss_scale=jnp.maximum(new_scale, 1.0),
            good_steps=good_steps,
        )
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "finite": ok,
            "bad_streak": new.bad_streak,
            "loss_scale": scale,
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
