"""Importing TensorFlow and Keras quietly, and only when needed.

The command line and the error paths never import TensorFlow; every module
that needs it calls :func:`import_keras` inside the function that needs it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

_QUIET = True


def set_quiet(quiet: bool) -> None:
    """Choose whether TensorFlow's start-up chatter is hidden (the default)."""
    global _QUIET
    _QUIET = quiet


def import_keras():
    """Import TensorFlow and Keras with their log output silenced.

    TensorFlow's C++ runtime writes straight to file descriptor 2 while it
    loads, before any Python setting can reach it, so the descriptor is pointed
    at ``/dev/null`` for the length of the import (unless quiet mode is off).

    Returns:
        ``(tf, keras)``.
    """
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return sys.modules["tensorflow"], sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    saved = None
    if _QUIET:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            saved = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import tensorflow as tf
            import keras
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
    if _QUIET:
        tf.get_logger().setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
    return tf, keras
