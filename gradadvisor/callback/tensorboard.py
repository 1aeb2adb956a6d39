"""GradientMonitor's TensorBoard records: gradient histograms and the summaries it writes."""

from __future__ import annotations

import functools
import math

import numpy as np

_HISTOGRAM_BUCKETS = 30
_TENSORBOARD_GROUPS = {
    "grad_norm": "gradients", "grad_rms": "gradients", "grad_max_abs": "gradients",
    "zero_grad_fraction": "gradients", "nonfinite_grads": "gradients",
    "weight_norm": "weights", "update_ratio": "updates",
    "activation_mean": "activations", "activation_std": "activations",
    "dead_fraction": "activations", "saturated_fraction": "activations",
    "nonfinite_activations": "activations",
}


def _histogram(tf, variables, gradients):
    """``[low, high, counts...]`` of a layer's finite gradient entries, in fixed buckets."""
    flat = tf.concat([tf.reshape(tf.cast(g if g is not None else tf.zeros_like(v), "float32"), [-1])
                      for v, g in zip(variables, gradients)], 0)
    finite = tf.math.is_finite(flat)
    low = tf.reduce_min(tf.where(finite, flat, math.inf))
    high = tf.reduce_max(tf.where(finite, flat, -math.inf))
    width = tf.maximum(high - low, 1e-30) / _HISTOGRAM_BUCKETS
    index = tf.cast(tf.floor((tf.where(finite, flat, low) - low) / width), "int32")
    index = tf.clip_by_value(index, 0, _HISTOGRAM_BUCKETS - 1)
    counts = tf.math.unsorted_segment_sum(tf.cast(finite, "float32"), index, _HISTOGRAM_BUCKETS)
    return tf.concat([tf.stack([low, high]), counts], 0)


@functools.lru_cache(maxsize=None)
def _metadata(plugin: str):
    """The summary metadata tf.summary.scalar/histogram write (TensorBoard's plugins)."""
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=b""))


def _write_scalar(tf, tag, value, step):
    # tf.summary.scalar needs the tensorboard package; this writes the same record without it.
    tf.summary.write(tag, tf.constant(value, "float32"), step=step, metadata=_metadata("scalars"))


def _write_histogram(tf, tag, low, high, counts, step):
    """A histogram record in the layout of tf.summary.histogram: rows of (left, right, count)."""
    buckets = len(counts)
    if not (math.isfinite(low) and math.isfinite(high)):
        data = np.zeros((buckets, 3))
    elif high == low:
        data = np.stack([np.full(buckets, low), np.full(buckets, high),
                         np.r_[np.zeros(buckets - 1), counts.sum()]], axis=1)
    else:
        edges = np.linspace(low, high, buckets + 1)
        data = np.stack([edges[:-1], edges[1:], counts], axis=1)
    tf.summary.write(tag, tf.constant(data, "float64"), step=step, metadata=_metadata("histograms"))
