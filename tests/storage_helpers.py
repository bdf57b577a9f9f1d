"""Helpers for storage tests: local trees shaped like what jobs copy around."""

from __future__ import annotations

import os


def write_tree(root: str, files: dict[str, bytes]) -> dict[str, bytes]:
    """Write ``files`` (relative path -> bytes) below ``root``; returns ``files``.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> write_tree(root, {"variables/variables.index": b"i"})
        {'variables/variables.index': b'i'}
        >>> open(os.path.join(root, "variables", "variables.index"), "rb").read()
        b'i'
    """
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return files
