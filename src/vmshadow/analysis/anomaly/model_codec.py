"""River models in and out of snapshots: pickled, compressed and base64-encoded, read back with an allow-list.

River models have no serialisation of their own besides pickle. Snapshots travel between workers and the store,
so they are untrusted input: unpickling is limited to the exact classes a model is made of (Python's "restricting
globals" recipe), and a snapshot from another river version is refused rather than half-understood.
"""

from __future__ import annotations

import base64
import binascii
import io
import pickle
import zlib
from importlib.metadata import version
from typing import Any

# Every class a Half-Space Trees model (alone or behind river's min/max scaler) pickles to, river 0.26
ALLOWED = frozenset({
    ("builtins", "tuple"), ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("functools", "partial"), ("random", "Random"), ("river.anomaly.hst", "HalfSpaceTrees"),
    ("river.compose.pipeline", "Pipeline"), ("river.preprocessing.scale", "MinMaxScaler"),
    ("river.stats.maximum", "Max"), ("river.stats.minimum", "Min"), ("river.tree.padded", "PaddedBranch"),
    ("river.tree.padded", "PaddedLeaf"),
})  # fmt: skip


class ModelStateError(ValueError):
    """A snapshot's model cannot be read back; says why and where."""


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise ModelStateError(f"refused to load {module}.{name}: not a part of an anomaly model")
        return super().find_class(module, name)


def encode_model(model: object) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(model, protocol=5))).decode("ascii")


def decode_model(text: str, *, where: str) -> Any:
    """The model encoded in `text`; `where` names it in errors (e.g. the VMN's key)."""
    try:
        raw = zlib.decompress(base64.b64decode(text, validate=True))
    except (binascii.Error, zlib.error, ValueError) as e:
        raise ModelStateError(f"{where}: model is not base64 of compressed data ({e})") from e
    try:
        return _AllowListUnpickler(io.BytesIO(raw)).load()
    except ModelStateError as e:
        raise ModelStateError(f"{where}: {e}") from e
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
        raise ModelStateError(f"{where}: model cannot be read back ({e})") from e


def river_version() -> str:
    return version("river")
