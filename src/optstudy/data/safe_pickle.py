"""Unpickling restricted to plain containers and numpy arrays (defence in depth for data files)."""

from __future__ import annotations

import io
import pickle
from typing import Any

# The only globals a CIFAR-style batch pickle may refer to: numpy array reconstruction (old and
# new module paths) and the helper protocol 2 uses for bytes written by Python 3.
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which a data file may not")
        return super().find_class(module, name)


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` (byte strings kept as bytes) allowing no globals but numpy arrays'."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
