"""Chainer implementations; run in the legacy environment."""
