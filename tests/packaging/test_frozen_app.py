"""The PyInstaller desktop app (packaging/): it builds, opens its main window offscreen, and
`generate` through the frozen binary writes a PNG. Slow (the build takes minutes): `-m slow`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 1500


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path / "home"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("PYTHONPATH", None)  # the frozen app must carry everything itself
    return env


@pytest.mark.slow
def test_frozen_app_builds_opens_its_window_and_generates(tmp_path: Path) -> None:
    pytest.importorskip("PyInstaller", reason="pip install -e '.[package]'")
    dist = tmp_path / "dist"
    start = time.monotonic()
    build = subprocess.run(["bash", str(ROOT / "packaging" / "build.sh"), str(dist)], cwd=ROOT,
                           env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT_S)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    sys.stderr.write(f"frozen app built in {time.monotonic() - start:.0f} s\n")
    app = dist / "diffusion-studio" / "diffusion-studio"
    assert app.is_file() and os.access(app, os.X_OK)
    internal = dist / "diffusion-studio" / "_internal"
    assert not (internal / "torch").exists()  # training stays in the pip install
    assert (internal / "resources" / "models" / "shapes" / "model.json").is_file()

    env = _env(tmp_path)
    opened = subprocess.run([str(app)], env=dict(env, DIFFUSION_STUDIO_QUIT_AFTER_MS="1500"),
                            capture_output=True, text=True, timeout=300)
    assert opened.returncode == 0, opened.stderr[-3000:]
    shown = [line for line in opened.stderr.splitlines() if "main window shown:" in line]
    assert len(shown) == 1 and "Diffusion Studio" in shown[0], opened.stderr[-3000:]

    out = tmp_path / "circle.png"
    generated = subprocess.run([str(app), "generate", "a large red circle on a black background", "--steps", "8",
                                "--seed", "7", "--device", "cpu", "-o", str(out)],
                               env=env, capture_output=True, text=True, timeout=300)
    assert generated.returncode == 0, generated.stderr[-3000:]
    with Image.open(out) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[:2] == (32, 32) and pixels.std() > 1.0  # an image, not a blank
