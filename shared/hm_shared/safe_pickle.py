"""Unpickle downloaded files without letting them run code.

`pickle.loads` calls whatever global a pickle names (`os.system` included). `restricted_loads`
admits only plain containers (dict, list, tuple, set, str, bytes, numbers, None, OrderedDict),
numpy arrays, numpy scalars and dtypes without Python objects inside; any other global is refused
with `UnsafePickleError`. Use it for MMF LMDB values and for detectron `.pkl` weight files
(`encoding="latin1"` for files written by Python 2, as numpy's own loader does).
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hm_shared.errors import HmDataError

try:  # numpy >= 2 (numpy 1.26 has a forwarding numpy._core too)
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - older numpy
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


class UnsafePickleError(HmDataError):
    """A pickle names a global outside the allow-list, or holds Python objects in an array."""


def _plain_dtype(dtype: Any) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise UnsafePickleError(f"refused numpy dtype {dtype}: it holds Python objects")
    return dtype


def _dtype(*args: Any) -> np.dtype:
    return _plain_dtype(np.dtype(*args))


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refused array subtype {subtype!r}; only numpy.ndarray")
    return _multiarray._reconstruct(np.ndarray, shape, dtype)


def _scalar(dtype: Any, *args: Any) -> Any:
    return _multiarray.scalar(_plain_dtype(dtype), *args)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    return _numeric._frombuffer(buffer, _plain_dtype(dtype), shape, order)


def _encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles spell bytes as _codecs.encode(str, "latin1"); nothing else goes through.
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError(f"refused _codecs.encode({type(text).__name__}, {encoding!r})")
    return codecs.encode(text, encoding)


_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("builtins", "set"): set,
    ("builtins", "tuple"): tuple,  # paddle.save reduces each tensor to tuple((name, array))
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
}
for (_module, _name), _found in list(_ALLOWED.items()):  # Python 2 names (protocols 0-2)
    if _module == "builtins":
        _ALLOWED[("__builtin__", _name)] = _found
for _module in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x spell the same functions
    _ALLOWED[(f"{_module}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED[(f"{_module}.multiarray", "scalar")] = _scalar
    _ALLOWED[(f"{_module}.numeric", "_frombuffer")] = _frombuffer


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"refused to load global {module}.{name}: only numpy arrays, dtypes and plain "
                "containers are allowed in this file"
            )
        return found


def _check_arrays(obj: Any, depth: int = 0) -> None:
    # A dtype's pickled state could still switch on object fields: check what was built.
    if depth > 100:
        return
    if isinstance(obj, np.ndarray | np.generic):
        _plain_dtype(obj.dtype)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _check_arrays(key, depth + 1)
            _check_arrays(value, depth + 1)
    elif isinstance(obj, list | tuple | set | frozenset):
        for value in obj:
            _check_arrays(value, depth + 1)


def restricted_loads(
    data: bytes, *, encoding: str = "ASCII", source: Path | str | None = None
) -> Any:
    """`pickle.loads` that admits only numpy arrays/scalars/dtypes and plain containers.

    >>> restricted_loads(pickle.dumps({"bbox": np.zeros((2, 4), np.float32)}))["bbox"].shape
    (2, 4)
    """
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
        _check_arrays(obj)
    except UnsafePickleError as exc:
        raise UnsafePickleError(str(exc), source) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        UnicodeDecodeError,
        MemoryError,
    ) as exc:
        raise HmDataError(f"not a readable pickle ({type(exc).__name__}: {exc})", source) from exc
    return obj


__all__ = ["UnsafePickleError", "restricted_loads"]
