"""One model factory and one place for devices: checked on the source, not by convention.

Training, the embedding cache, evaluation and the predictor must all get their model from
``factory.make_model`` (so a checkpoint is always checked against its shard folder the same
way and named weights are always fetched the same way), and only ``runtime`` decides devices,
autocast and DDP. A new call site elsewhere fails here with its file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import geopak_model

PKG = Path(geopak_model.__file__).resolve().parent

# name called -> modules allowed to call it
ALLOWED = {
    "load_checkpoint": {"factory.py"},
    "build_model": {"factory.py"},
    "GeopakModel": {"checkpoint.py", "model.py"},
    "init_process_group": {"runtime.py"},
    "DistributedDataParallel": {"runtime.py"},
}
# torch.cuda.is_available() / torch.autocast(): only runtime.py (checkpoint.py saves the CUDA
# RNG state when there is one)
DEVICE_CHOICE = {"is_available": {"runtime.py", "checkpoint.py"}, "autocast": {"runtime.py"}}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = (
                f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            )
            yield name, node.lineno, f


def test_one_factory_and_one_runtime():
    bad = []
    for path in sorted(PKG.glob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        for name, line, func in _calls(tree):
            allowed = ALLOWED.get(name)
            if allowed is not None and path.name not in allowed:
                bad.append(f"{path.name}:{line} calls {name}")
            if (
                name in DEVICE_CHOICE
                and isinstance(func, ast.Attribute)
                and ast.unparse(func.value) in ("torch", "torch.cuda")
                and path.name not in DEVICE_CHOICE[name]
            ):
                bad.append(f"{path.name}:{line} chooses a device (use runtime.resolve_device)")
    assert not bad, bad
