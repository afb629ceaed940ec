"""String options of the FlashInfer API and their enum values in the C++ host API."""

from __future__ import annotations

from typing import Optional

KV_LAYOUTS = {"NHD": 0, "HND": 1}
POS_ENCODING_MODES = {"NONE": 0, "ROPE_LLAMA": 1, "ALIBI": 2}


def _choice(value, choices: dict, arg: str) -> int:
    if isinstance(value, str) and value in choices:
        return choices[value]
    expected = ", ".join(repr(c) for c in choices)
    raise ValueError(f"{arg}: expected one of {expected}, got {value!r}")


def kv_layout_code(kv_layout: str) -> int:
    return _choice(kv_layout, KV_LAYOUTS, "kv_layout")


def pos_encoding_code(mode: str) -> int:
    return _choice(mode, POS_ENCODING_MODES, "pos_encoding_mode")


def scalar(value, default: float, arg: str) -> float:
    """A float option where None means FlashInfer's default."""
    if value is None:
        return float(default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{arg}: expected a number or None, got {type(value).__qualname__}")
    return float(value)


def integer(value, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg}: expected an int, got {type(value).__qualname__}")
    return value


def split_size(value, unit: str) -> int:
    """plan()'s fixed_split_size for the C++ API: None, or FlashInfer's own spelling of it (-1), is
    the automatic split (0); the C++ API checks the rest (e.g. that disable_split_kv is not also
    given)."""
    size = -1 if value is None else integer(value, "fixed_split_size")
    if size == -1:
        return 0
    if size <= 0:
        raise ValueError(f"fixed_split_size: expected a positive number of {unit}, or None or -1 for the "
                         f"automatic split, got {size}")
    return size


def optional_flag(value: Optional[bool], arg: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    raise TypeError(f"{arg}: expected a bool, got {type(value).__qualname__}")


def attention_options(pos_encoding_mode: str, window_left: int, logits_soft_cap: Optional[float],
                      sm_scale: Optional[float], rope_scale: Optional[float],
                      rope_theta: Optional[float]) -> dict:
    """The options every attention call takes, as the keyword arguments of its binding (None:
    FlashInfer's default; sm_scale 0 means 1/sqrt(head_dim) to the kernels)."""
    return dict(pos_encoding_mode=pos_encoding_code(pos_encoding_mode),
                window_left=integer(window_left, "window_left"),
                logits_soft_cap=scalar(logits_soft_cap, 0.0, "logits_soft_cap"),
                sm_scale=scalar(sm_scale, 0.0, "sm_scale"),
                rope_scale=scalar(rope_scale, 1.0, "rope_scale"),
                rope_theta=scalar(rope_theta, 1e4, "rope_theta"))
