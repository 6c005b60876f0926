"""Localisation of attributions on BlockMNIST: how much sits on the signal block.

Per example: the share of attribution mass on the signal block, of ``|a|`` and of the
positive part ``max(a, 0)``, and the fraction of the ``k`` most attributed pixels (by
``sum_c |a|``) that fall in the null block (lower is better; "feature leakage" in Shah et
al.'s terms when high).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgrad._validation import FINITE, checked
from jaxgrad.types import ArrayLike


@checked(top_k=FINITE)
def block_localization(
    attribution: ArrayLike, signal_mask: ArrayLike, *, top_k: int | float = 0.05
) -> dict[str, jax.Array]:
    """Localisation metrics of ``attribution [N, H, W, C]`` given ``signal_mask [N, H, W]``.

    Args:
      attribution: the maps.
      signal_mask: True on the signal block (``jaxgrad.data.block_mnist.signal_mask``).
      top_k: the number of top pixels, or a fraction of the pixels when a float in (0, 1).

    Returns:
      ``{"signal_mass_abs", "signal_mass_pos", "top_k_in_null": [N]}``.
    """
    a = jnp.asarray(attribution)
    m = jnp.asarray(signal_mask, bool)
    if a.ndim != 4 or m.shape != a.shape[:3]:
        raise ValueError(
            f"attribution [N, H, W, C] and signal_mask [N, H, W] must match, got {a.shape} "
            f"and {m.shape}"
        )
    num_pixels = a.shape[1] * a.shape[2]
    k = int(round(top_k * num_pixels)) if isinstance(top_k, float) else int(top_k)
    if not 1 <= k <= num_pixels:
        raise ValueError(f"top_k must select between 1 and {num_pixels} pixels, got {top_k}")
    absmap = jnp.sum(jnp.abs(a), axis=-1)
    pos = jnp.sum(jnp.maximum(a, 0), axis=-1)
    mf = m.astype(a.dtype)

    def share(v):
        total = jnp.sum(v, axis=(1, 2))
        return jnp.sum(v * mf, axis=(1, 2)) / jnp.where(total > 0, total, 1.0)

    _, idx = jax.lax.top_k(absmap.reshape(len(a), -1), k)
    in_null = jnp.take_along_axis((~m).reshape(len(a), -1), idx, axis=1)
    return {
        "signal_mass_abs": share(absmap),
        "signal_mass_pos": share(pos),
        "top_k_in_null": jnp.mean(in_null.astype(a.dtype), axis=1),
    }
