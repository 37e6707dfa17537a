"""Command line: ``lightning-init explain POLICY --model pkg.module:factory``, ``presets`` and
``doctor --model pkg.module:factory --input-shape 8,3,32,32`` (check, suggest, re-check).

``python -m lightning_init`` runs the same commands.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from lightning_init._text import did_you_mean
from lightning_init.errors import OptionError, PolicyError
from lightning_init.policy.presets import preset_paths

__all__ = ["main"]


def _raised(err: BaseException) -> str:
    """``"RuntimeError: message (file.py:3)"`` on one line: where the user's code raised."""
    message = " ".join(str(err).split())
    if isinstance(err, SyntaxError) and err.filename:
        return f"SyntaxError: {err.msg} ({err.filename}:{err.lineno})"
    frames = traceback.extract_tb(err.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}{': ' + message if message else ''}{where}"


def _load_attribute(spec: str, option: str = "--model"):  # -> (the attribute, its module path)
    module_path, sep, attr = spec.partition(":")
    if not sep or not module_path or not attr:
        raise PolicyError(f"{option} {spec!r}: expected 'pkg.module:factory'")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: a module next to the user
    try:
        module = importlib.import_module(module_path)
    except ImportError as err:
        raise PolicyError(
            f"{option} {spec!r}: cannot import {module_path!r}: {err} (searched the current "
            "directory and PYTHONPATH)") from None
    except Exception as err:  # the user's module failed while importing
        raise PolicyError(
            f"{option} {spec!r}: importing {module_path!r} raised {_raised(err)}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        public = [name for name in vars(module) if not name.startswith("_")]
        raise PolicyError(
            f"{option} {spec!r}: {module_path!r} has no attribute {attr!r}."
            f"{did_you_mean(attr, public)}") from None


def _load_model(spec: str):  # -> nn.Module
    from torch import nn

    factory = _load_attribute(spec)
    try:
        model = factory if isinstance(factory, nn.Module) else factory()
    except Exception as err:  # the user's factory failed
        raise PolicyError(f"--model {spec!r}: the factory raised {_raised(err)}") from None
    if not isinstance(model, nn.Module):
        raise PolicyError(
            f"--model {spec!r}: the factory returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-init",
        description="Declarative weight initialization: explain a policy, list the presets.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser(
        "explain", help="dry run: which rule and initializer each parameter of a model gets"
    )
    explain.add_argument("policy", help="a YAML file or a preset name (see `presets`)")
    explain.add_argument(
        "--model", required=True,
        help="'pkg.module:factory': a callable returning the model (or a module instance)",
    )
    explain.add_argument("--markdown", action="store_true", help="print a Markdown table")
    commands.add_parser("presets", help="list the shipped presets")
    doctor = commands.add_parser(
        "doctor", help="check a model's init, suggest a policy that fixes it, re-check it")
    doctor.add_argument("--model", required=True, help="'pkg.module:factory' (as for explain)")
    source = doctor.add_mutually_exclusive_group(required=True)
    source.add_argument("--input-shape", help="a random N(0, 1) batch of this shape: 8,3,32,32")
    source.add_argument("--input", help="'pkg.module:make_batch': a callable returning a batch")
    doctor.add_argument("--write", metavar="PATH", help="write the suggested policy's YAML here")
    doctor.add_argument("--seed", type=int, default=0, help="seed of the random batch (0)")
    doctor.add_argument("--table", action="store_true", help="print the per-layer table too")
    return parser


def _sample(args: argparse.Namespace):  # -> a batch
    import torch

    if args.input is not None:
        make = _load_attribute(args.input, "--input")
        try:
            return make() if callable(make) else make
        except Exception as err:  # the user's batch factory failed
            raise OptionError(f"--input {args.input!r}: it raised {_raised(err)}") from None
    try:
        shape = [int(part) for part in args.input_shape.split(",")]
    except ValueError:
        shape = []
    if not shape or min(shape) < 1:
        raise OptionError(f"--input-shape {args.input_shape!r}: expected positive integers "
                          "separated by commas, such as 8,3,32,32")
    return torch.randn(*shape, generator=torch.Generator().manual_seed(args.seed))


def _check_writable(path: str) -> None:
    """An ``OptionError`` before any work when ``--write`` cannot be written: its directory
    does not exist or is no directory, or it names a directory."""
    from pathlib import Path

    target = Path(path)
    folder = target.parent
    if not folder.exists():
        raise OptionError(f"--write {path!r}: the directory {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise OptionError(f"--write {path!r}: {str(folder)!r} is not a directory")
    if target.is_dir():
        raise OptionError(f"--write {path!r}: it is a directory; give a file name")


def _takes(model, sample, option: str) -> None:
    """An ``OptionError`` naming ``option`` when ``model`` cannot take ``sample``: one
    no-grad forward in eval mode (the modules' modes restored after)."""
    import torch

    from lightning_init._lightning import call_model
    from lightning_init.runtime.no_trace import modes_kept

    try:
        with modes_kept(model), torch.no_grad():
            model.eval()
            call_model(model, sample)
    except Exception as err:  # the model cannot take the batch, or its forward failed
        raise OptionError(f"{option}: the model's forward on this batch raised "
                          f"{_raised(err)}") from None


def _doctor(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lightning_init.check import check_init

    if args.write:
        _check_writable(args.write)
    model = _load_model(args.model)
    sample = _sample(args)
    _takes(model, sample, f"--input {args.input!r}" if args.input is not None
           else f"--input-shape {args.input_shape!r}")
    report = check_init(model, sample)
    print(report if args.table else "\n".join(report.verdict()))
    print()
    suggestion = report.suggest_policy()
    print(suggestion.verdicts())
    if suggestion.offered:
        print()
        print(suggestion.yaml, end="")
        if args.write:
            try:
                Path(args.write).write_text(suggestion.yaml)
            except OSError as err:
                raise OptionError(f"--write {args.write!r}: {_raised(err)}") from None
            print(f"written to {args.write}")
    return 0 if report.ok or suggestion.offered else 1


def _description(path: os.PathLike[str] | str) -> str:
    """A preset's one-line description: the first line of its leading comment.

    Example:
        >>> from lightning_init.policy.presets import preset_paths
        >>> _description(preset_paths()["kaiming_relu"])
        'ReLU nets: He normal N(0, 2/fan_in) weights, zero biases, norm layers at identity.'
    """
    with open(path, encoding="utf-8") as file:
        for line in file:
            if line.strip():
                return line.strip().lstrip("#").strip() if line.lstrip().startswith("#") else ""
    return ""


def _presets() -> int:
    paths = preset_paths()
    width = max((len(n) for n in paths), default=0)
    for name in sorted(paths):
        print(f"{name.ljust(width)}  {_description(paths[name])}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status: 0 ok, 2 on a policy or usage error, 1 when
    the reader closed the pipe (quietly, as Python's ``signal`` documentation recommends) or,
    for ``doctor``, when the check found problems and no verified fix.

    Example:
        >>> main(["presets"])  # doctest: +ELLIPSIS
        bert ...
        0
    """
    try:
        return _main(argv)
    except BrokenPipeError:  # `lightning-init explain ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 1


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "presets":
        return _presets()
    from lightning_init.policy import InitPolicy  # imports torch

    if args.command == "doctor":
        try:
            return _doctor(args)
        except (PolicyError, OptionError) as err:
            print(f"lightning-init: error: {err}", file=sys.stderr)
            return 2
    try:
        policy = InitPolicy.load(args.policy)
        model = _load_model(args.model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plan = policy.explain(model)
    except PolicyError as err:
        print(f"lightning-init: error: {err}", file=sys.stderr)
        return 2
    print(plan.to_markdown() if args.markdown else plan)
    sys.stdout.flush()
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return 0
