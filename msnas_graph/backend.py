"""Backends: the one small protocol through which graphs become runnable models and runs.

The core never imports a backend. Backends are found by name in the entry-point group
``msnas_graph.backends`` (third parties add theirs there), through :func:`register_backend`
(from a plugin module, see :func:`load_plugins`), plus the built-ins below. The ``null``
backend (:class:`msnas_graph.null_backend.NullBackend`) does nothing but record its calls: it
tests the dispatch without torch.

The protocol covers everything the command line calls. Run settings travel as plain
mappings of option names (``{"space": "tiny", "epochs": (1, 1), ...}``): each backend builds
its own configuration from them, so no signature here names a backend's types.

>>> "null" in available_backends()
True
>>> b = get_backend("null")
>>> from msnas_graph.spec import SearchSpace
>>> b.build_supernet(SearchSpace.preset("tiny"))
('supernet', 'tiny')
>>> outcome = b.search({"space": "tiny"}, "runs/x")
>>> b.calls[-1]
('search', 'runs/x', {'space': 'tiny'})
>>> try:
...     get_backend("torhc")
... except BackendError as exc:
...     print(exc)
unknown backend 'torhc' (known: null, torch) (did you mean 'torch'?)
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

from ._util import unknown_name
from .errors import BackendError, RunError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .architecture import Architecture
    from .budget import Cost, CostModel
    from .compare import Comparison
    from .genotype import CellGenotype
    from .spec import SearchSpace
    from .state import SearchState

__all__ = [
    "Backend",
    "Options",
    "PluginError",
    "QuickstartOutcome",
    "ResumeConflictError",
    "RunFlags",
    "SearchOutcome",
    "TrainOutcome",
    "available_backends",
    "get_backend",
    "load_plugins",
    "register_backend",
]

ENTRY_POINT_GROUP = "msnas_graph.backends"
_BUILTIN = {
    "torch": "msnas_graph.backends.torch:TorchBackend",
    "null": "msnas_graph.null_backend:NullBackend",
}
#: Backends registered at run time (by a plugin module): name -> factory or "module:attr".
_REGISTERED: dict[str, Callable[[], Any] | str] = {}
#: One instance per backend name, so that repeated look-ups share state (e.g. recorded calls).
_INSTANCES: dict[str, Any] = {}


#: A backend's run settings by option name (``{"space": "tiny", "epochs": (1, 1)}``).
Options = Mapping[str, Any]
PathLike = str | Path


class RunFlags(TypedDict, total=False):
    """How a run treats its folder: continue an interrupted run (``resume``), replace a
    finished one (``overwrite``), show progress bars (``progress``, default on)."""

    resume: bool
    overwrite: bool
    progress: bool


class PluginError(BackendError):
    """A plugin module (``--plugin``, ``MSNAS_PLUGINS`` or an entry point) failed to load."""


class ResumeConflictError(RunError):
    """Options given for a resumed run that its stored configuration fixes.

    ``fields`` names them (the backend's option names), so that a front end can spell them
    its own way (the CLI as ``--max-steps``).
    """

    def __init__(self, run_dir: str | Path, fields: Sequence[str]) -> None:
        self.run_dir = Path(run_dir)
        self.fields = tuple(fields)
        super().__init__(
            f"{', '.join(self.fields)} cannot change when resuming: {self.run_dir}/config.json "
            f"fixes it; drop the option, or start a new run (overwrite)"
        )


class SearchOutcome(Protocol):
    """What :meth:`Backend.search` returns."""

    @property
    def run_dir(self) -> Path: ...
    @property
    def state(self) -> SearchState: ...
    @property
    def architecture(self) -> Architecture | None: ...


class TrainOutcome(Protocol):
    """What :meth:`Backend.train` returns."""

    @property
    def run_dir(self) -> Path: ...
    @property
    def best_dice(self) -> float | None: ...
    @property
    def best_epoch(self) -> int: ...


class QuickstartOutcome(Protocol):
    """What :meth:`Backend.quickstart` returns: the architecture, the evaluation summary,
    seconds per stage and where the files went."""

    @property
    def architecture(self) -> Architecture: ...
    @property
    def summary(self) -> dict[str, Any]: ...
    @property
    def seconds(self) -> dict[str, float]: ...
    @property
    def files(self) -> dict[str, Path]: ...


@runtime_checkable
class Backend(Protocol):
    """What a backend provides: compile a space into a supernet and an architecture into a
    network, measure costs, and run the stages the command line offers.

    ``options`` are plain mappings of option names to values; a backend refuses names it does
    not know with one line (:class:`~msnas_graph.errors.MsnasError`).
    """

    name: str

    def build_supernet(self, space: SearchSpace) -> Any:
        """A trainable supernet for ``space``."""
        ...

    def build_network(self, arch: Architecture) -> Any:
        """The final network of ``arch``."""
        ...

    def cost(self, model: Any, input_size: int, options: Options | None = None) -> dict[str, Any]:
        """Parameters, MACs and FLOPs (keys ``params``, ``macs``, ``flops``, ``input_shape``)
        of ``model`` (a built model, or a model source: ``"unet"``, an architecture file, a
        run folder) at ``input_size``; ``options`` e.g. ``activation`` (also measure a training
        step's activation bytes)."""
        ...

    def edge_cost_model(
        self,
        cells: Mapping[str, CellGenotype],
        space: SearchSpace,
        input_size: int | None = None,
        *,
        latency: bool = False,
        device: str | None = None,
    ) -> CostModel:
        """A measured cost model of each network edge, for budgeted decoding; with
        ``latency``, each part is also timed on ``device`` (default: the CPU)."""
        ...

    def unet_cost(
        self,
        space: SearchSpace,
        input_size: int | None = None,
        *,
        latency: bool = False,
        device: str | None = None,
        runtime: str | None = None,
    ) -> Cost:
        """What U-Net(``space.channels``, depth 4) costs, measured as :meth:`edge_cost_model`
        measures parts (or, where ``runtime`` is named, timed whole in it as :meth:`built_cost`
        times): the reference of a budget relative to the U-Net (``decode --max-macs 0.8x``)."""
        ...

    def built_cost(
        self,
        arch: Architecture,
        input_size: int | None = None,
        *,
        latency: bool = False,
        device: str | None = None,
        runtime: str = "auto",
    ) -> Cost:
        """The built network's parameters and batch-1 MACs; with ``latency``, also its fastest
        batch-1 pass, whole, in the inference ``runtime`` on ``device`` (default: the CPU)."""
        ...

    def search(
        self, options: Options, run_dir: PathLike, **flags: Unpack[RunFlags]
    ) -> SearchOutcome:
        """Search into ``run_dir``. On ``resume`` of a run with a stored configuration,
        ``options`` may only change what does not alter the result (else
        :class:`ResumeConflictError`)."""
        ...

    def train(self, options: Options, run_dir: PathLike, **flags: Unpack[RunFlags]) -> TrainOutcome:
        """Train a model from scratch into ``run_dir`` (``resume`` as in :meth:`search`)."""
        ...

    def evaluate(self, run_dirs: Sequence[PathLike], options: Options) -> dict[str, Any]:
        """Evaluate trained runs: one run gives its summary, several (the folds of a k-fold
        cross-validation) their combination (``num_folds``, ``mean_dice``: mean and std)."""
        ...

    def predict(
        self, run_dir: PathLike, inputs: PathLike, out_dir: PathLike, options: Options
    ) -> list[Path]:
        """Segment ``inputs`` with a trained model; the masks written."""
        ...

    def compare(self, run_dirs: Sequence[PathLike], options: Options) -> Comparison:
        """Trained, evaluated runs side by side: their evaluation, parameters, MACs and
        measured latency, and each against the U-Net runs' frontier (``options`` e.g.
        ``table``, ``plot``: files to write; ``runtime``, ``threads``, ``input_size``)."""
        ...

    def export(self, source: PathLike, path: PathLike, options: Options) -> dict[str, Any]:
        """Export a model source to ``path``; a report (``path``, ``max_abs_diff`` ...)."""
        ...

    def quickstart(
        self, out_dir: PathLike, options: Options, **flags: Unpack[RunFlags]
    ) -> QuickstartOutcome:
        """Search -> decode -> train -> evaluate into ``out_dir``."""
        ...


def register_backend(name: str, factory: Callable[[], Any] | str) -> None:
    """Make a backend known under ``name``: a class or factory returning one, or a
    ``"module:attr"`` string imported on first use (what a ``--plugin`` module calls);
    a plugin module might say ``register_backend("jax", "my_package.jax_backend:JaxBackend")``.
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise BackendError(f"backend name '{name}' must be letters, digits, '-' and '_'")
    _REGISTERED[name] = factory
    _INSTANCES.pop(name, None)


def _registry() -> dict[str, Callable[[], Any] | str]:
    found: dict[str, Callable[[], Any] | str] = {**_BUILTIN, **_REGISTERED}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def available_backends() -> list[str]:
    """Names of the known backends (installed or not)."""
    return sorted(_registry())


def check_backend_name(name: str) -> None:
    """Raise a one-line :class:`BackendError` (known names, closest match) for an unknown
    backend name, without importing any backend."""
    reg = _registry()
    if name not in reg:
        raise BackendError(unknown_name("backend", name, reg))


def _protocol_gaps(backend: Any) -> list[str]:
    members = [m for m in Backend.__dict__ if not m.startswith("_")] + ["name"]
    return sorted({m for m in members if not hasattr(backend, m)})


def get_backend(name: str = "torch") -> Backend:
    """The backend called ``name`` (one instance per name); a one-line :class:`BackendError`
    for an unknown name, a backend that is not installed or one missing protocol methods."""
    if name in _INSTANCES:
        return _INSTANCES[name]
    check_backend_name(name)
    target = _registry()[name]
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise BackendError(
                f"backend '{name}' is not installed ({exc.name or exc}); install it with "
                f"pip install 'msnas-graph[{name}]'"
            ) from None
        target = getattr(module, attr)
    backend = target()
    if not isinstance(backend, Backend):
        missing = ", ".join(_protocol_gaps(backend))
        raise BackendError(
            f"backend '{name}' does not implement the Backend protocol (missing: {missing})"
        )
    _INSTANCES[name] = backend
    return backend


def load_plugins(modules: Iterable[str]) -> list[ModuleType]:
    """Import each plugin module (``--plugin``/``MSNAS_PLUGINS``): importing it registers its
    operations (e.g. with the torch backend's ``register_op``) or backends
    (:func:`register_backend`). A plugin is a module name, looked up on the Python path and
    then as ``NAME.py`` in the current folder, or a file path (``path/to/my_ops.py``). A module
    that fails to import is one :class:`PluginError` line naming it, the error and, when the
    module itself is missing, where it was looked for and how to point at it.

    >>> [m.__name__ for m in load_plugins(["json"])]
    ['json']
    >>> try:
    ...     load_plugins(["no_such_plugin_module"])
    ... except PluginError as exc:
    ...     message = str(exc)
    >>> print(message.split(" (")[0])
    plugin 'no_such_plugin_module' failed to import: No module named 'no_such_plugin_module'
    >>> print(message.split("): ")[-1])
    give the file's path (--plugin path/to/no_such_plugin_module.py) or add its folder to PYTHONPATH
    """
    loaded = []
    for raw in modules:
        name = raw.strip()
        if not name:
            continue
        try:
            loaded.append(_import_plugin(name))
        except PluginError:
            raise
        except (Exception, SystemExit) as exc:  # anything a user's module does: one line
            if isinstance(exc, SystemExit):
                detail = f"it called sys.exit({exc.code!r}) while being imported"
            else:
                detail = exc.msg if isinstance(exc, ModuleNotFoundError) else _one_line(exc)
            raise PluginError(f"plugin '{name}' failed to import: {detail}") from exc
    return loaded


def _import_plugin(name: str) -> ModuleType:
    """Import ``name``: a file path, a module on the Python path, or ``NAME.py`` in the
    current folder (which a console script does not put on the path)."""
    if name.endswith(".py") or "/" in name or os.sep in name:
        return _import_file(name, Path(name).expanduser())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (name == exc.name or name.startswith(f"{exc.name}.")):
            raise  # the plugin was found; something it imports is missing
        local = Path.cwd() / f"{name}.py"
        if "." not in name and local.is_file():
            return _import_file(name, local)
        raise PluginError(
            f"plugin '{name}' failed to import: {exc.msg} (looked on the Python path and for "
            f"{name.split('.')[0]}.py in the current folder {Path.cwd()}): give the file's path "
            f"(--plugin path/to/{name.split('.')[-1]}.py) or add its folder to PYTHONPATH"
        ) from exc


def _import_file(name: str, path: Path) -> ModuleType:
    """Import the Python file ``path`` as the module named after its stem."""
    if not path.is_file():
        raise PluginError(
            f"plugin '{name}': no such file {path}: give the path of a Python file, or a module "
            "name on PYTHONPATH"
        )
    module_name = path.stem
    known = sys.modules.get(module_name)
    if known is not None:
        if Path(getattr(known, "__file__", "") or "").resolve() == path.resolve():
            return known
        raise PluginError(
            f"plugin '{name}': a module named '{module_name}' is already imported (from "
            f"{getattr(known, '__file__', None) or 'a built-in'}); rename {path.name}"
        )
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin '{name}': {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _one_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
