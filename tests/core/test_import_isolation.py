"""The core imports with torch, onnxruntime and PySide6 made unimportable."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import diffusion_studio.core

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = r"""
import importlib.abc, sys
BLOCKED = ("torch", "onnxruntime", "PySide6", "onnx")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not leaked, leaked
print("imported", len(sys.argv) - 1)
"""


def core_modules() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(diffusion_studio.core.__path__)]
    return ["diffusion_studio.core"] + [f"diffusion_studio.core.{n}" for n in sorted(names)]


def test_every_core_module_imports_without_torch_onnxruntime_or_qt() -> None:
    modules = core_modules()
    assert {"diffusion_studio.core.schedule", "diffusion_studio.core.sampling_loop",
            "diffusion_studio.core.png_meta", "diffusion_studio.core.bundle"} <= set(modules)
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, *modules],
        cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"imported {len(modules)}"


def test_the_blocker_really_blocks() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, "torch"],
        cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "torch is blocked" in proc.stderr
