"""Reading pickles a user is handed without running their code.

MMSA feature files (`--data X.pkl`) are pickles by nature, and a plain `pickle.load` calls any
function a crafted file names. `safe_pickle_load` admits only what MMSA files and `moodlens
featurize` output contain: plain builtins (dict, list, str, numbers, sets...), numpy arrays,
dtypes and scalars, and OrderedDict. Any other global is refused with one sentence naming the
file and the global (`DataError`), before it is ever called. See docs/reliability.md.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from moodlens.core.errors import DataError

_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float",
             "complex", "bool", "slice", "range", "object"}
_ALLOWED = {
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),                 # how protocol-2 pickles (numpy's) spell bytes
    ("copyreg", "_reconstructor"),         # plain object reconstruction of a builtin type
}
_NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                  "numpy._core.numeric", "numpy.dtypes")
_NUMPY_NAMES = {"ndarray", "dtype", "_reconstruct", "scalar", "_frombuffer"}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        allowed = ((module == "builtins" and name in _BUILTINS) or (module, name) in _ALLOWED
                   or (module in _NUMPY_MODULES and (name in _NUMPY_NAMES or
                                                     (module == "numpy.dtypes" and name.endswith("DType")))))
        if not allowed:
            raise DataError(f"{self.source} refers to '{module}.{name}', which a data file has no reason to "
                            f"hold; it was not loaded (only builtins and numpy arrays are read from pickles).")
        if module.startswith("numpy.core"):        # numpy 2 renamed numpy.core to numpy._core
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def safe_pickle_load(path: str | Path, what: str | None = None):
    """Unpickle `path` admitting only builtins and numpy arrays/dtypes; one sentence otherwise."""
    path = Path(path)
    source = what or str(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"Cannot read {source}: {err.strerror or err}.") from None
    return safe_pickle_loads(data, source)


def safe_pickle_loads(data: bytes, source: str = "the pickle"):
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except DataError:
        raise
    except Exception as err:  # unpickling raises many types for a corrupt or truncated file
        raise DataError(f"Cannot read {source} as a pickle ({type(err).__name__}: {err}).") from None


__all__ = ["safe_pickle_load", "safe_pickle_loads"]
