"""Child processes of the Train tab: an environment that finds our packages, and no torch in the GUI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from diffusion_studio.ui.train.processes import child_environment, project_root


def test_child_environment_finds_our_packages_anywhere(tmp_path: Path) -> None:
    env = child_environment({"PATH": os.environ.get("PATH", ""), "PYTHONPATH": "/elsewhere"})
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(project_root()), "/elsewhere"]
    code = "import diffusion_studio, exporter, sys; print(diffusion_studio.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve().parent.parent == project_root()


def test_the_gui_never_imports_torch(tmp_path: Path) -> None:
    code = ("import sys; import diffusion_studio.ui.main_window, diffusion_studio.ui.train.workspace; "
            "print('torch' in sys.modules)")
    env = child_environment({"PATH": os.environ.get("PATH", ""), "QT_QPA_PLATFORM": "offscreen"})
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
