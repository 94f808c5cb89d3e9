"""A stand-in for `torchvision`, for the timm comparison benchmark only (never imported by vitlab).

timm imports torchvision at import time (data transforms, FrozenBatchNorm2d for its freeze helpers),
but its MobileViT model code does not use it when a model is built and run. The torchvision wheel
cannot be installed beside the CPU build of torch here, so `install()` registers an importer that
answers every `torchvision.*` import with a module whose attributes are placeholder classes.
Touching a placeholder is allowed (timm builds lookup tables from them at import time); creating
one raises, so a benchmark that really needed torchvision would fail loudly instead of measuring
something else.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types


class _PlaceholderMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(f"torchvision stub: {cls.__qualname__} was used at run time; install torchvision")


def _placeholder(qualname: str) -> type:
    return _PlaceholderMeta(qualname.rsplit(".", 1)[-1], (), {"__qualname__": qualname})


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _placeholder(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0+stub"
        return module

    def exec_module(self, module):
        pass


def install() -> None:
    """Make `import torchvision...` resolve to the placeholder modules (idempotent)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
