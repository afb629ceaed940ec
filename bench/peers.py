"""Which libraries and ops are available, and why not when they are not.

Pure Python: importing a library is attempted here, but nothing assumes torch or a GPU, so the
CPU tests can check that a failed import turns into a "missing: <reason>" entry.
"""

import importlib
import inspect
from dataclasses import dataclass
from typing import Optional

EXPECTED_FLASHINFER_VERSION = "0.5.3"

# The library each implementation needs (see workloads.OP_IMPLEMENTATIONS).
IMPLEMENTATION_LIBRARY = {
    "fi_core": "fi_core",
    "fi_core-cc": "fi_core",
    "fi_core-fa2": "fi_core",
    "flashinfer": "flashinfer",
    "flashinfer-tc": "flashinfer",
    "flashinfer-fa2": "flashinfer",
    "sdpa-flash": "torch",
    "sdpa-cudnn": "torch",
    "torch-sort": "torch",
}


class MissingOp(Exception):
    """An implementation cannot be run at all (as opposed to one that raised while running)."""


@dataclass
class Library:
    name: str
    module: Optional[object] = None
    version: Optional[str] = None
    missing_reason: Optional[str] = None

    @property
    def available(self):
        return self.module is not None


def first_line(text, limit=300):
    lines = str(text).strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe_exception(exc):
    return f"{type(exc).__name__}: {first_line(exc)}"


def import_library(module_name):
    """Import a library; an import that fails in any way becomes a Library with the reason."""
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # a broken package may raise anything, even SystemExit
        if isinstance(exc, KeyboardInterrupt):
            raise
        return Library(module_name, missing_reason=f"import {module_name} failed ({describe_exception(exc)})")
    return Library(module_name, module=module, version=getattr(module, "__version__", None))


def disabled_library(module_name, reason):
    return Library(module_name, missing_reason=reason)


def library_for(implementation):
    return IMPLEMENTATION_LIBRARY[implementation]


def unavailable_reason(implementation, libraries):
    """Why an implementation cannot run because its library is missing, or None if it can."""
    library = libraries.get(library_for(implementation))
    if library is None:
        return f"library {library_for(implementation)} was not loaded"
    return None if library.available else library.missing_reason


def find_op(library, attribute):
    """The named function or class of a library, or MissingOp naming what is absent."""
    if not library.available:
        raise MissingOp(library.missing_reason)
    op = getattr(library.module, attribute, None)
    if op is None:
        version = f" {library.version}" if library.version else ""
        raise MissingOp(f"{library.name}{version} has no {attribute}")
    return op


def accepts_keyword(callable_obj, keyword):
    """True/False when the signature can be read; None when it cannot (compiled functions)."""
    try:
        parameters = inspect.signature(callable_obj).parameters
    except (TypeError, ValueError):
        return None
    if keyword in parameters:
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def require_keyword(library, attribute, callable_obj, keyword):
    """Raise MissingOp when an op visibly lacks a keyword argument a variant needs."""
    if accepts_keyword(callable_obj, keyword) is False:
        raise MissingOp(f"{library.name}.{attribute} takes no {keyword} argument")


def version_note(library, expected):
    """A warning line when a peer's version is not the one the anchors were measured with."""
    if library.available and library.version and library.version != expected:
        return f"{library.name} is {library.version}, anchors were measured with {expected}"
    return None
