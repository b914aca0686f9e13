"""The names of the operations a search space may use (no implementations here).

The core only needs to know which names exist, so that a space can be validated without a
backend. Backends register their implementations under the same names (the torch backend's
``register_op`` also registers the name here), and a user's custom operation becomes usable in a
space once its backend module is imported.

Third-party packages add operations through the entry-point group ``msnas_graph.operations``:
each entry point is a module (importing it registers its operations) or a callable (called
once, without arguments). They are loaded the first time a name is looked up that is not
known yet, or by :func:`load_operation_plugins`; a plugin that fails to load is one
:class:`~msnas_graph.errors.BackendError` line naming it.

>>> "sep_conv_3x3" in known_operations()
True
>>> register_operation_name("my_conv", "a user's operation")
>>> "my_conv" in known_operations()
True
"""

from __future__ import annotations

from importlib.metadata import entry_points

from .errors import BackendError, SpecError

__all__ = [
    "DEFAULT_OPERATIONS",
    "DENSE_OPERATIONS",
    "ENTRY_POINT_GROUP",
    "NONE_OP",
    "check_operation",
    "known_operations",
    "load_operation_plugins",
    "register_operation_name",
]

#: The entry-point group through which packages add operations.
ENTRY_POINT_GROUP = "msnas_graph.operations"

#: The zero operation: takes part in the search, never chosen when decoding.
NONE_OP = "none"

#: The paper's five operations (DESIGN.md section 1), the default of every preset.
DEFAULT_OPERATIONS: tuple[str, ...] = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "avg_pool_3x3",
    "skip_connect",
)

#: Dense convolutions (ReLU-conv-BN, as DiNTS uses): the ``quick`` preset's set. They run
#: many times faster per MAC than the depth-wise separable ones on CPUs and GPUs, and with no
#: parameter-free operation a cost-aware search cannot turn every cell into an identity
#: (``benchmarks/results/frontier.md``).
DENSE_OPERATIONS: tuple[str, ...] = ("conv_3x3", "conv_3x3_dil2")

_OPERATIONS: dict[str, str] = {
    "sep_conv_3x3": "residual separable conv 3x3: x + BN(pw(dw3x3(ReLU(x))))",
    "sep_conv_5x5": "residual separable conv 5x5: x + BN(pw(dw5x5(ReLU(x))))",
    "dil_conv_3x3": "dilated separable conv 3x3, rate 2: BN(pw(dw3x3_d2(ReLU(x))))",
    "conv_3x3": "dense conv 3x3: BN(conv3x3(ReLU(x)))",
    "conv_3x3_dil2": "dense dilated conv 3x3, rate 2: BN(conv3x3_d2(ReLU(x)))",
    "conv_3x3_dil4": "dense dilated conv 3x3, rate 4: BN(conv3x3_d4(ReLU(x)))",
    "conv_5x5": "dense conv 5x5: BN(conv5x5(ReLU(x)))",
    "avg_pool_3x3": "average pooling 3x3, stride 1, padding 1 (count_include_pad=False)",
    "max_pool_3x3": "max pooling 3x3, stride 1, padding 1",
    "skip_connect": "identity",
    NONE_OP: "zero (disconnection); searchable, never decoded",
}


def register_operation_name(name: str, description: str = "") -> None:
    """Make ``name`` a known operation name (idempotent)."""
    if not name or not name.replace("_", "").isalnum():
        raise SpecError(f"operation name '{name}' must be letters, digits and underscores")
    _OPERATIONS.setdefault(name, description)


_plugins_loaded = False


def load_operation_plugins() -> list[str]:
    """Load every ``msnas_graph.operations`` entry point once; the names of those loaded
    (an empty list on later calls)."""
    global _plugins_loaded
    if _plugins_loaded:
        return []
    _plugins_loaded = True
    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = ep.load()
            if callable(target):
                target()
        except Exception as exc:  # a broken plugin is one line, not a traceback
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise BackendError(
                f"operation plugin '{ep.name}' ({ep.value}) failed to load: "
                f"{type(exc).__name__}: {first}"
            ) from exc
        loaded.append(ep.name)
    return loaded


def known_operations() -> dict[str, str]:
    """All known operation names with a one-line description each (entry-point plugins
    included)."""
    load_operation_plugins()
    return dict(_OPERATIONS)


def check_operation(name: str, where: str = "ops") -> None:
    """Raise :class:`SpecError` naming the closest known operation if ``name`` is unknown."""
    if name not in _OPERATIONS:
        load_operation_plugins()
    if name not in _OPERATIONS:
        from ._util import unknown_name

        raise SpecError(f"{where}: {unknown_name('operation', name, _OPERATIONS)}")
