"""Keras 3 implementations of the three models, one code path for the TensorFlow, JAX and torch backends.

The backend is fixed per process: the harness sets KERAS_BACKEND before keras is first imported
(harness/runtimes/python.py), so each backend runs in its own worker.
"""
