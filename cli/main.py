"""``msnas-graph``: a thin click layer over the Python API.

Every command is one short function that parses options, calls one API function and prints
the result. Only this module turns exceptions into messages and exit codes:
0 success, 1 error in the input or the run, 2 usage (click's own), 130 interrupted.
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from typing import Any, NoReturn

import click

from msnas_graph import __version__
from msnas_graph.errors import BackendError, MsnasError

from .backend_commands import COMMANDS, backend
from .decode import decode
from .options import (
    dot_limit_options,
    json_option,
    paths_option,
    render_limits,
    render_option,
    space_option,
)

log = logging.getLogger("msnas_graph")


#: The most ``--threads`` accepted: beyond any machine's cores, short of what overflows.
MAX_THREADS = 4096


class Group(click.Group):
    """A click group that reports library errors as one line with exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return self._invoke_undoing(ctx)
        except MsnasError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _fail(str(exc))
        except KeyboardInterrupt:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo("msnas-graph: interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # output piped into e.g. `head`, which closed early
            sys.stderr.close()
            sys.exit(0)
        except OSError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            _fail(f"{where}{exc.strerror or exc}")
        except MemoryError:  # an allocation the estimates did not foresee
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _fail(
                "out of memory (an allocation failed); free memory, lift the memory limit "
                "(ulimit -v), or give smaller inputs or batches"
            )
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:  # a safety net: never a bare traceback without --debug
            if ctx.obj and ctx.obj.get("debug"):
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            _fail(
                f"unexpected {type(exc).__name__}: {first} (please report it; --debug shows "
                f"the traceback)"
            )

    def _invoke_undoing(self, ctx: click.Context) -> Any:
        """Run the command with SIGTERM as Ctrl-C; if it fails or is interrupted, take back the
        files and folders it created (a run command keeps its files: its checkpoint is what
        ``--resume`` continues from; only the empty folders it made go)."""
        from msnas_graph._util import (
            command_inputs,
            command_outputs,
            remove_created,
            sigterm_as_interrupt,
        )

        # outputs may not replace a file the command read; what it creates is recorded
        with command_inputs(), command_outputs() as created, sigterm_as_interrupt():
            try:
                return super().invoke(ctx)
            except BaseException as exc:
                if not _succeeded(exc):
                    keep = ctx.invoked_subcommand in RUN_COMMANDS
                    remove_created(created, files=not keep)
                raise


#: Commands whose outputs are a resumable run folder: a failure keeps the files they wrote.
RUN_COMMANDS = frozenset({"search", "train", "quickstart"})


def _succeeded(exc: BaseException) -> bool:
    """Whether ``exc`` ends a command that succeeded (an exit with status 0)."""
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code == 0
    return isinstance(exc, SystemExit) and exc.code in (0, None)


def _fail(message: str) -> NoReturn:
    click.echo(f"msnas-graph: error: {message}", err=True)
    sys.exit(1)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _emit(obj: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(obj, indent=2) if as_json else text)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="msnas-graph")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option(
    "--backend",
    "backend_name",
    default="torch",
    show_default=True,
    envvar="MSNAS_BACKEND",
    metavar="NAME",
    help="Backend that builds and runs the networks (env MSNAS_BACKEND).",
)
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE first, so that the operations or backends it registers can be used: a "
    "module on PYTHONPATH, NAME.py in the current folder, or a file path (repeatable; env "
    "MSNAS_PLUGINS, comma-separated).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1, max=MAX_THREADS),
    envvar="MSNAS_THREADS",
    help="CPU threads for PyTorch (env MSNAS_THREADS). On a busy or shared machine, 1 avoids "
    "oversubscription, which can slow small networks many times.",
)
@click.option(
    "--no-memory-check",
    is_flag=True,
    help="Do not refuse requests whose estimated memory exceeds what is available (env "
    "MSNAS_NO_MEMORY_CHECK=1, or true/yes/on; MSNAS_MEMORY_LIMIT=8G caps what counts as "
    "available).",
)
@click.pass_context
def main(
    ctx: click.Context,
    debug: bool,
    verbose: int,
    backend_name: str,
    plugins: tuple[str, ...],
    threads: int | None,
    no_memory_check: bool,
) -> None:
    """MS-NAS: multi-scale neural architecture search for medical image segmentation.

    \b
    Typical session:
      msnas-graph quickstart runs/quick          # search -> decode -> train -> evaluate
      msnas-graph count --space paper            # how big is the paper's space?
      msnas-graph sample --space paper -o s.json # a random search state
      msnas-graph decode s.json --paths 5 --render arch.svg -o arch.json
      msnas-graph diff a.json b.json --render diff.svg
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    from msnas_graph._util import env_flag
    from msnas_graph.limits import BOOL_ENVS

    for name in BOOL_ENVS:  # a misspelt yes/no is refused before any work, whatever the command
        env_flag(name)
    if no_memory_check:  # read by msnas_graph.limits; restored when the command ends
        from msnas_graph.limits import NO_CHECK_ENV

        previous = os.environ.get(NO_CHECK_ENV)
        os.environ[NO_CHECK_ENV] = "1"
        ctx.call_on_close(lambda: _restore_env(NO_CHECK_ENV, previous))
    if threads is not None:  # read by torch when it is imported (the torch commands import it)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from msnas_graph.backend import check_backend_name, load_plugins

    every_plugin = [*os.environ.get("MSNAS_PLUGINS", "").split(","), *plugins]
    load_plugins(every_plugin)
    check_backend_name(backend_name)
    ctx.obj["backend"] = backend_name
    ctx.obj["plugins"] = [p for p in every_plugin if p.strip()]  # for worker processes
    ctx.obj["threads"] = threads


# ---------------------------------------------------------------------------- graph core


@main.command()
@space_option("paper")
@json_option
def count(space: str, as_json: bool) -> None:
    """Count paths, cells and architectures of a search space (exact integers).

    \b
    Example:
      msnas-graph count --space paper
    """
    from msnas_graph.counting import count_space
    from msnas_graph.spec import load_space

    counts = count_space(load_space(space))
    _emit(counts.to_dict(), as_json, str(counts))


@main.command()
@space_option("quick")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--scale", type=float, default=1.0, show_default=True, help="Std of the random logits."
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), required=True, help="State JSON to write."
)
def sample(space: str, seed: int, scale: float, output: str) -> None:
    """Write a random search state (a random-architecture baseline).

    \b
    Example:
      msnas-graph sample --space paper --seed 1 -o state.json
    """
    from msnas_graph.spec import load_space
    from msnas_graph.state import SearchState

    state = SearchState.random(load_space(space), seed=seed, scale=scale)
    click.echo(f"wrote {state.save(output)}")


@main.command(name="render")
@click.argument("source", metavar="FILE")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    required=True,
    help="Picture to write: .svg, .png, .pdf or .dot.",
)
@click.option("--no-cells", is_flag=True, help="Do not draw the cells of an architecture.")
@dot_limit_options
def render_cmd(
    source: str, output: str, no_cells: bool, dot_timeout: float, max_dot_elements: int
) -> None:
    """Render a space (preset or spec), a search state or an architecture.

    A space is drawn as its layers x scales trellis; a state adds edge widths from the
    network weights; an architecture highlights its paths and draws its cells.

    \b
    Examples:
      msnas-graph render paper -o trellis.svg
      msnas-graph render arch.json -o arch.png
      msnas-graph render big.json -o big.svg --dot-timeout 600 --max-dot-elements 50000
    """
    from msnas_graph.architecture import Architecture
    from msnas_graph.io import load_any
    from msnas_graph.render import render

    obj = load_any(source)
    kwargs = {"show_cells": not no_cells} if isinstance(obj, Architecture) else {}
    kwargs.update(render_limits(dot_timeout, max_dot_elements))
    click.echo(f"wrote {render(obj, output, **kwargs)}")


@main.command(name="diff")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@paths_option
@render_option
@dot_limit_options
@json_option
def diff_cmd(
    a: str, b: str, paths: int, render_path: str | None, as_json: bool, **dot_limits: Any
) -> None:
    """Compare two architectures or search states (states are decoded with --paths).

    Exit code 0 either way; the text says "no differences" when they match.

    \b
    Examples:
      msnas-graph diff runs/a/architecture.json runs/b/architecture.json
      msnas-graph diff runs/s/states/epoch_010.json runs/s/state.json --render evo.svg
    """
    from msnas_graph.architecture import Architecture
    from msnas_graph.diff import diff
    from msnas_graph.io import load_any
    from msnas_graph.state import SearchState

    da, db = load_any(a), load_any(b)
    for source, obj in ((a, da), (b, db)):
        if not isinstance(obj, Architecture | SearchState):
            raise MsnasError(
                f"{source}: is a search space; diff compares architectures or search states "
                f"(decode a state first, or `msnas-graph sample` one from the space)"
            )
    result = diff(da, db, paths=paths)  # type: ignore[arg-type]
    if render_path:
        from msnas_graph.render import render

        render(result, render_path, **render_limits(**dot_limits))
    _emit(result.to_dict(), as_json, str(result))


@main.command()
@json_option
def ops(as_json: bool) -> None:
    """List the registered operations a space may use."""
    from msnas_graph.operations import known_operations

    with contextlib.suppress(BackendError):  # the backend's registry adds its (and users') ops
        backend()
    known = known_operations()
    _emit(known, as_json, "\n".join(f"{k:14s} {v}" for k, v in sorted(known.items())))


for _command in [decode, *COMMANDS]:
    main.add_command(_command)


def run() -> None:  # pragma: no cover - console entry point helper
    main(prog_name="msnas-graph")


if __name__ == "__main__":  # pragma: no cover
    run()
