"""The invariants every flow and bijection keeps, checked over the one registry (tests/flow_registry.py):
the inverse undoes the forward, each direction returns its own log-determinant, and that log-determinant
is the log|det| of the Jacobian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.flow_registry import FLOWS


def _flat(tree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])


@pytest.mark.parametrize("name", list(FLOWS))
def test_inverse_undoes_forward_with_its_own_logdet(name):
    case = FLOWS[name]()
    y, logdet = case.forward(case.x)
    moved = _flat(y).size != case.x.size or float(jnp.max(jnp.abs(_flat(y) - case.x.reshape(-1)))) > 1e-2
    assert moved or float(jnp.max(jnp.abs(logdet))) > 1e-2, "the flow should not be the identity here"
    x_back, logdet_inverse = case.inverse(y)
    np.testing.assert_allclose(x_back, case.x, atol=case.x_atol, rtol=0)
    np.testing.assert_allclose(logdet_inverse, -logdet, rtol=case.logdet_rtol, atol=case.logdet_atol)


@pytest.mark.parametrize("name", list(FLOWS))
def test_logdet_is_the_log_abs_det_of_the_jacobian(name):
    case = FLOWS[name]()
    shape = case.x.shape
    jac = jax.jacfwd(lambda a: _flat(case.forward(a.reshape(shape))[0]))(case.x.reshape(-1))
    _, expected = jnp.linalg.slogdet(jac)
    _, logdet = case.forward(case.x)
    np.testing.assert_allclose(float(logdet[0]), float(expected), rtol=1e-4, atol=max(case.logdet_atol, 1e-4))
