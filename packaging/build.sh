#!/usr/bin/env bash
# Build the one-folder desktop app: dist/diffusion-studio/diffusion-studio (the inference side).
# Needs the package installed with its `package` extra: pip install -e '.[package]'
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
DIST="${1:-dist}"
"$PYTHON" -m PyInstaller --noconfirm --log-level WARN --distpath "$DIST" --workpath build/pyinstaller \
    packaging/diffusion-studio.spec
echo "built $DIST/diffusion-studio/diffusion-studio"
