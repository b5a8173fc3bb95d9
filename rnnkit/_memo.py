"""``memoized``: functools.lru_cache for the small lookups a layer's forward makes on every call,
invisible to torch.compile.

dynamo traces through an lru_cache-wrapped function and warns about it at every compile ("Dynamo
detected a call to a functools.lru_cache-wrapped function"), a warning users of rnnkit's layers
would see for code that is not theirs.  While dynamo traces, ``memoized`` calls the function itself
(its results are constants of the graph anyway); eagerly, the cache.
"""
from __future__ import annotations

import functools

import torch


def memoized(fn=None, *, maxsize=None):
    def decorate(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args):
            return fn(*args) if torch.compiler.is_compiling() else cached(*args)

        call.cache_clear = cached.cache_clear
        return call
    return decorate if fn is None else decorate(fn)


__all__ = ["memoized"]
