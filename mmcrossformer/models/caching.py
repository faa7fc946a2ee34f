"""Caches of size-derived tensors that step aside while a graph is captured.

The tables and masks that depend only on a group layout (see
``grouping.py`` and ``position_bias.py``) are cached per shape and device
in eager mode. A graph capture must instead see them computed: dynamo
(``torch.compile``) cannot trace into ``functools.lru_cache``, a dynamic
``torch.export`` has symbolic sizes (unhashable, and the cached tensor of
one size would be baked into a graph meant for all), and a traced ONNX
graph should hold the ops, not a constant from an earlier eager call.
:func:`capturing_graph` is that one condition; :func:`eager_lru_cache`
applies it. :func:`exporting` is its part for exporters only.
"""
import functools
from typing import Callable

import torch


def exporting() -> bool:
    """True while a model is exported: ``torch.export`` (strict or not,
    which also backs ``torch.onnx.export``'s default ``dynamo=True``
    exporter), ``torch.jit.trace`` and the TorchScript ONNX exporter
    (``torch.onnx.export(..., dynamo=False)``)."""
    return (torch.compiler.is_exporting() or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export())


def capturing_graph() -> bool:
    """True while a graph is captured rather than run eagerly:
    ``torch.compile`` (dynamo) or :func:`exporting`. (``torch.export``
    also sets ``is_compiling()``; the other flags are checked so that this
    does not rest on that.)"""
    return torch.compiler.is_compiling() or exporting()


def eager_lru_cache(maxsize: int) -> Callable[[Callable], Callable]:
    """``functools.lru_cache(maxsize)`` in eager mode; the plain function
    while :func:`capturing_graph`.

    The decorated function keeps ``cache_info()`` and ``cache_clear()`` (of
    the eager cache; calls made while capturing are neither hits nor
    misses) and exposes the undecorated one as ``__wrapped__``. Its
    arguments must be hashable in eager mode.
    """

    def decorator(fn: Callable) -> Callable:
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if capturing_graph():
                return fn(*args, **kwargs)
            return cached(*args, **kwargs)

        wrapper.cache_info = cached.cache_info
        wrapper.cache_clear = cached.cache_clear
        return wrapper

    return decorator
