"""CIFAR data augmentation in pure JAX: random crop with zero padding, horizontal flip.

Jit-able and vmapped over the batch, with an explicit key, so it runs on device inside the
training step instead of in a host pipeline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgrad._validation import KEY, NONNEGATIVE_INT, checked


@checked(key=KEY, padding=NONNEGATIVE_INT)
def random_crop(key: jax.Array, images: jax.Array, *, padding: int = 4) -> jax.Array:
    """Pads each image by ``padding`` zeros on every side and crops it back at a random offset.

    Args:
      key: PRNG key (one offset per image is drawn from it).
      images: ``[B, H, W, C]``.
      padding: pixels added on each side (4 for CIFAR).

    Returns:
      ``[B, H, W, C]``: each image shifted by up to ``padding`` pixels, zero-filled.
    """
    if images.ndim != 4:
        raise ValueError(f"images must have rank 4 [B, H, W, C], got shape {images.shape}")
    b, h, w, c = images.shape
    p = padding
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * p + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


@checked(key=KEY)
def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Flips each image ``[B, H, W, C]`` left-right with probability 1/2."""
    if images.ndim != 4:
        raise ValueError(f"images must have rank 4 [B, H, W, C], got shape {images.shape}")
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


@checked(key=KEY, padding=NONNEGATIVE_INT)
def cifar_augment(key: jax.Array, images: jax.Array, *, padding: int = 4) -> jax.Array:
    """Random crop with ``padding``-pixel zero padding, then a random horizontal flip.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> cifar_augment(jax.random.key(0), jnp.ones((2, 32, 32, 3))).shape
      (2, 32, 32, 3)
    """
    k_crop, k_flip = jax.random.split(key)
    return random_flip(k_flip, random_crop(k_crop, images, padding=padding))


@checked(key=KEY, padding=NONNEGATIVE_INT)
def crop_augment(key: jax.Array, images: jax.Array, *, padding: int = 4) -> jax.Array:
    """Random crop with ``padding``-pixel zero padding, no flip (digits: SVHN)."""
    return random_crop(key, images, padding=padding)


AUGMENTATIONS = {"none": None, "cifar": cifar_augment, "crop": crop_augment}


def get_augmentation(name: str):
    """An augmentation by name, for configs: ``none``, ``cifar`` or ``crop``.

    ``"none"`` gives None, ``"cifar"`` :func:`cifar_augment` (crop and flip), ``"crop"``
    :func:`crop_augment`.
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"name: augment must be one of {sorted(AUGMENTATIONS)}, got {name!r}")
    return AUGMENTATIONS[name]
