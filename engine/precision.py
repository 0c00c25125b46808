"""Opt-in faster compute for serving: bfloat16 arithmetic and XLA compilation.

``bfloat16`` runs every layer with the Keras ``mixed_bfloat16`` policy: weights stay float32,
activations and products are bfloat16 (8 bits of mantissa, relative rounding ~4e-3 per
operation), outputs are cast back to float32. CPUs with AVX512_BF16 or AMX (``/proc/cpuinfo``
flags ``avx512_bf16``, ``amx_bf16``) and recent GPUs run it natively. ``jit_compile`` traces the
network with XLA. Both keep tiled serving exact in their own precision: a tile computes the same
operations on the same pixels whatever the tiling.
"""

from __future__ import annotations

from pathlib import Path

from .contract import PRECISIONS
from .errors import InvalidSpec

#: CPU flags (``/proc/cpuinfo``) of native bfloat16 arithmetic.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where there is none)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def native_bfloat16() -> list[str]:
    """The native bfloat16 flags this CPU has (empty: bfloat16 is emulated, and slow)."""
    return sorted(set(BF16_FLAGS) & cpu_flags())


def in_precision(model, precision: str):
    """``model`` itself for ``float32``; for ``bfloat16`` a copy with the same weights whose
    layers compute in bfloat16 (the input layers keep float32 inputs)."""
    if precision not in PRECISIONS:
        raise InvalidSpec(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return model
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    policy = keras.DTypePolicy("mixed_bfloat16")
    for layer in copy.layers:
        if not isinstance(layer, keras.layers.InputLayer):
            layer.dtype_policy = policy
    return copy
