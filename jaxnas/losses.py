"""Classification losses and masked evaluation sums shared by every strategy and trainer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxnas.types import Batch, Metrics


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of integer `labels` under `logits` (classes last)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of rows whose arg-max logit is the label (float32)."""
    return jnp.mean(jnp.argmax(logits, -1) == labels)


def eval_sums(logits: jax.Array, batch: Batch) -> Metrics:
    """Summed loss, correct count and example count of `logits` on `batch`.

    Rows where `batch["mask"]` is False are padding (a last partial batch filled up to
    the jitted shape) and do not count; without a mask every row counts. Sums rather
    than means, so that batches (and devices) add up exactly before one division.
    """
    labels = batch["label"]
    mask = batch.get("mask", jnp.ones(labels.shape, bool)).astype(logits.dtype)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return {"loss_sum": jnp.sum(losses * mask),
            "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
            "count": jnp.sum(mask)}
