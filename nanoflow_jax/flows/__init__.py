"""Pure-function flow algebra (no Flax): layout changes and element-wise couplings."""

from nanoflow_jax.flows.coupling import AFFINE, Coupling, make_coupling
from nanoflow_jax.flows.layout import flip_rows, shift_down, squeeze, unsqueeze

__all__ = ["AFFINE", "Coupling", "make_coupling", "flip_rows", "shift_down", "squeeze", "unsqueeze"]
