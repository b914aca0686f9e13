"""Backends: the one small protocol through which graphs become runnable models.

The core never imports a backend. Backends are found by name in the entry-point group
``msnas_graph.backends`` (third parties add theirs there) plus the built-ins below. The
``null`` backend does nothing but record its calls: it tests the dispatch without torch.

>>> "null" in available_backends()
True
>>> b = get_backend("null")
>>> from msnas_graph.spec import SearchSpace
>>> b.build_supernet(SearchSpace.preset("tiny"))
('supernet', 'tiny')
>>> try:
...     get_backend("torhc")
... except BackendError as exc:
...     print(exc)
unknown backend 'torhc' (known: null, torch) (did you mean 'torch'?)
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._util import unknown_name
from .errors import BackendError

if TYPE_CHECKING:
    from .architecture import Architecture
    from .spec import SearchSpace

__all__ = ["Backend", "NullBackend", "available_backends", "get_backend"]

ENTRY_POINT_GROUP = "msnas_graph.backends"
_BUILTIN = {
    "torch": "msnas_graph.backends.torch:TorchBackend",
    "null": "msnas_graph.backend:NullBackend",
}


@runtime_checkable
class Backend(Protocol):
    """What a backend provides: compile a space into a supernet, an architecture into a
    network, and measure a network's cost."""

    name: str

    def build_supernet(self, space: SearchSpace) -> Any:
        """A trainable supernet for ``space``."""
        ...

    def build_network(self, arch: Architecture) -> Any:
        """The final network of ``arch``."""
        ...

    def cost(self, model: Any, input_size: int) -> dict[str, Any]:
        """Parameters, MACs and FLOPs of ``model`` at ``input_size`` (keys ``params``,
        ``macs``, ``flops``)."""
        ...


class NullBackend:
    """A backend that builds nothing and returns descriptions: tests the dispatch."""

    name = "null"

    def build_supernet(self, space: SearchSpace) -> Any:
        return ("supernet", space.name)

    def build_network(self, arch: Architecture) -> Any:
        return ("network", arch.content_hash)

    def cost(self, model: Any, input_size: int) -> dict[str, Any]:
        return {"params": 0, "macs": 0, "flops": 0}


def _registry() -> dict[str, str]:
    found = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def available_backends() -> list[str]:
    """Names of the known backends (installed or not)."""
    return sorted(_registry())


def get_backend(name: str = "torch") -> Backend:
    """Instantiate the backend called ``name``; a one-line :class:`BackendError` otherwise."""
    reg = _registry()
    if name not in reg:
        raise BackendError(unknown_name("backend", name, reg))
    module_name, _, attr = reg[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(
            f"backend '{name}' is not installed ({exc.name or exc}); install it with "
            f"pip install 'msnas-graph[{name}]'"
        ) from None
    backend = getattr(module, attr)()
    if not isinstance(backend, Backend):
        raise BackendError(f"backend '{name}' does not implement the Backend protocol")
    return backend
