"""Imports made without the optional packages a job never uses.

TensorFlow and Beam each import optional packages eagerly when they are installed and
carry on without them when they are not: TensorFlow imports Keras (1.3-1.4 s on 2 cores),
Beam's ``apache_beam.io`` its MongoDB connector (pymongo) and ``apache_beam.typehints``
pandas (0.3 s together). A job that serves a SavedModel through Beam uses none of them,
so they are hidden for the length of that one import; anything may still import them
normally afterwards.

Example:
    >>> with without("no_such_package_x"):
    ...     import json  # other imports are untouched
    >>> with without("json_hidden_here"):
    ...     import json_hidden_here
    Traceback (most recent call last):
    ...
    ModuleNotFoundError: No module named 'json_hidden_here'
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Iterator
from typing import Any


class _Hidden(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Claims the hidden names with a spec of its own whose module cannot be created.

    A finder that returned None would only pass the name on to the next finder; and a spec
    without an origin leaves TensorFlow finding no Keras directory either.
    """

    def __init__(self, packages: tuple[str, ...]) -> None:
        self._packages = frozenset(packages)

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.partition(".")[0] in self._packages:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec: Any) -> Any:
        raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)

    def exec_module(self, module: Any) -> None:  # never reached: create_module raises
        raise ModuleNotFoundError(module.__name__)


@contextlib.contextmanager
def without(*packages: str) -> Iterator[None]:
    """Inside the block, importing any of ``packages`` (top-level names) or their modules
    raises ModuleNotFoundError, as if they were not installed. Modules already imported
    stay as they are."""
    finder = _Hidden(packages)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
