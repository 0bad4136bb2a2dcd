"""Shared test set-up: offscreen Qt, a temp HOME so QSettings and user data stay isolated."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
