"""Pure-function flow algebra (no Flax): the audio row layout, the element-wise couplings of both families
(forward and inverse each with its own log-determinant), the image flow's steps, and likelihoods."""

from nanoflow_jax.flows.coupling import AFFINE, SIGMOID_AFFINE, Coupling, make_coupling
from nanoflow_jax.flows.likelihood import bits_per_dim, nll, nll_per_item
from nanoflow_jax.flows.rows import flip_rows, from_rows, shift_rows, to_rows

__all__ = [
    "AFFINE",
    "SIGMOID_AFFINE",
    "Coupling",
    "bits_per_dim",
    "flip_rows",
    "from_rows",
    "make_coupling",
    "nll",
    "nll_per_item",
    "shift_rows",
    "to_rows",
]
