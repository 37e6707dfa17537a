"""Throwaway stand-in for the initializer catalogue, used only until `initializers.py` lands.

If ``lightning_init.initializers`` already provides ``resolve_initializer`` this module does
nothing: the policy tests then run against the real catalogue.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_init import initializers
from lightning_init._errors import PolicyError
from lightning_init._suggest import did_you_mean

_FUNCS = {
    "zeros": (nn.init.zeros_, ()), "ones": (nn.init.ones_, ()),
    "constant": (nn.init.constant_, ("val",)), "normal": (nn.init.normal_, ("mean", "std")),
    "uniform": (nn.init.uniform_, ("a", "b")),
    "trunc_normal": (nn.init.trunc_normal_, ("mean", "std", "a", "b")),
    "kaiming_normal": (nn.init.kaiming_normal_, ("a", "mode", "nonlinearity")),
    "kaiming_uniform": (nn.init.kaiming_uniform_, ("a", "mode", "nonlinearity")),
    "xavier_uniform": (nn.init.xavier_uniform_, ("gain",)),
    "xavier_normal": (nn.init.xavier_normal_, ("gain",)),
    "orthogonal": (nn.init.orthogonal_, ("gain",)), "eye": (nn.init.eye_, ()),
    "dirac": (nn.init.dirac_, ("groups",)),
}
_NAMES = [*_FUNCS, "lecun_normal", "default", "keep"]


@dataclass(frozen=True)
class _FakeInitializer:
    name: str
    kwargs: dict = field(default_factory=dict)
    kind: str = "tensor"
    chunks: int | None = None
    blocks: Any = None
    func: Any = None

    def check_shape(self, shape, *, where):
        need = {"orthogonal": 2, "kaiming_normal": 2, "kaiming_uniform": 2,
                "xavier_uniform": 2, "xavier_normal": 2}.get(self.name)
        if need and len(shape) < need:
            raise PolicyError(f"{self.name} needs a tensor with {need}+ dimensions, "
                              f"got shape {tuple(shape)}", where=where)
        if self.name == "eye" and len(shape) != 2:
            raise PolicyError(f"eye needs 2 dimensions, got shape {tuple(shape)}", where=where)

    def expected_std(self, shape):
        if self.name == "normal":
            return float(self.kwargs.get("std", 1.0))
        if self.name in ("zeros", "ones", "constant"):
            return 0.0
        if self.name == "kaiming_normal" and len(shape) >= 2:
            fan_in = shape[1] * math.prod(shape[2:])
            return math.sqrt(2.0 / fan_in)
        return None

    def fill_(self, tensor, generator):
        with torch.no_grad():
            if self.kind != "tensor":
                return
            if self.blocks is not None or self.chunks:
                parts = tensor.chunk(len(self.blocks) if self.blocks else self.chunks, 0)
                inits = self.blocks or [_FakeInitializer(self.name, self.kwargs)] * len(parts)
                for part, init in zip(parts, inits, strict=True):
                    block = torch.empty_like(part)
                    init.fill_(block, generator)
                    part.copy_(block)
                return
            if self.name == "lecun_normal":
                fan_in = tensor.shape[1] * math.prod(tensor.shape[2:])
                nn.init.normal_(tensor, 0.0, 1 / math.sqrt(fan_in), generator=generator)
                return
            if self.func is not None:
                self.func(tensor, **self.kwargs)
                return
            func, _ = _FUNCS[self.name]
            if self.name in ("zeros", "ones", "constant", "eye", "dirac"):
                func(tensor, **self.kwargs)
            else:
                func(tensor, **self.kwargs, generator=generator)

    def describe(self):
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.name}({args})"


def _fake_resolve(spec, *, where="", source=None, line=None):
    if isinstance(spec, str):
        spec = {"init": spec}
    if not isinstance(spec, dict) or ("init" not in spec and "chunks" not in spec):
        raise PolicyError(f"bad initializer spec {spec!r}", where=where, source=source,
                          line=line)
    kwargs = dict(spec)
    if "chunks" in kwargs and isinstance(kwargs["chunks"], list):
        blocks = tuple(_fake_resolve(b, where=where) for b in kwargs["chunks"])
        return _FakeInitializer("chunks", {}, blocks=blocks)
    chunks = kwargs.pop("chunks", None)
    name = kwargs.pop("init")
    if not isinstance(name, str):
        raise PolicyError(f"bad initializer name {name!r}", where=where, source=source, line=line)
    if ":" in name:
        module_name, _, attr = name.partition(":")
        func = getattr(importlib.import_module(module_name), attr)
        return _FakeInitializer(name, kwargs, func=func)
    name = name.rstrip("_")
    if name not in _NAMES:
        raise PolicyError(f"unknown initializer {name!r}.{did_you_mean(name, _NAMES)}",
                          where=where, source=source, line=line)
    if name in ("default", "keep"):
        return _FakeInitializer(name, kind="reset" if name == "default" else "keep")
    if name == "lecun_normal":
        return _FakeInitializer(name, kwargs, chunks=chunks)
    valid = _FUNCS[name][1]
    for key in kwargs:
        if key not in valid:
            raise PolicyError(f"unknown argument {key!r} for {name}.{did_you_mean(key, valid)}",
                              where=where, source=source, line=line)
    return _FakeInitializer(name, kwargs, chunks=chunks)


def install() -> None:
    """Provide a minimal catalogue if the real one is not merged yet."""
    if not hasattr(initializers, "resolve_initializer"):
        initializers.resolve_initializer = _fake_resolve
        initializers.known_initializers = lambda: list(_NAMES)


install()
importlib.import_module("lightning_init.policy")
