"""The seed field takes every seed the pipeline takes (0 … 2⁶³−1) and nothing else."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QValidator

from diffusion_studio.core.params import SEED_MAX, check_seed
from diffusion_studio.ui.generate.history import HistoryStore
from diffusion_studio.ui.generate.settings_panel import SettingsPanel
from diffusion_studio.ui.generate.state import GenerateState
from diffusion_studio.ui.widgets.seed_edit import SeedEdit, SeedValidator


def test_validator_accepts_exactly_the_pipelines_seed_range() -> None:
    v = SeedValidator()
    state = lambda text: v.validate(text, len(text))  # noqa: E731
    assert SEED_MAX == 2**63 - 1 and check_seed(SEED_MAX) == SEED_MAX
    for good in ("0", "2147483648", "3000000000", str(2**62), str(SEED_MAX)):
        assert state(good) == QValidator.State.Acceptable, good
    for bad in (str(SEED_MAX + 1), "-1", "12a", "1.5", "1e9", "٣"):  # "٣" is an Arabic-Indic digit
        assert state(bad) == QValidator.State.Invalid, bad
    assert state("") == QValidator.State.Intermediate


def test_typing_a_64_bit_seed_sets_the_value_and_garbage_is_refused(qtbot) -> None:
    edit = SeedEdit()
    qtbot.addWidget(edit)
    changes: list[int] = []
    edit.valueChanged.connect(changes.append)
    edit.selectAll()
    qtbot.keyClicks(edit, "4611686018427387904x-")  # 2**62, then characters the validator refuses
    assert edit.text() == str(2**62) and edit.value() == 2**62 and changes[-1] == 2**62
    qtbot.keyClick(edit, Qt.Key.Key_Up)
    assert edit.value() == 2**62 + 1 and edit.text() == str(2**62 + 1)
    qtbot.keyClick(edit, Qt.Key.Key_PageDown)
    assert edit.value() == 2**62 - 9
    edit.setValue(SEED_MAX)
    edit.end(False)
    qtbot.keyClicks(edit, "7")  # one more digit would leave the range: refused
    assert edit.value() == SEED_MAX
    edit.clear()  # an emptied field keeps the seed in use and shows it again when editing ends
    assert edit.value() == SEED_MAX
    edit.editingFinished.emit()
    assert edit.text() == str(SEED_MAX)
    edit.setValue(-5)  # like QSpinBox.setValue: clamped
    assert edit.value() == 0 and edit.text() == "0"
    qtbot.keyClick(edit, Qt.Key.Key_Down)
    assert edit.value() == 0


def test_panel_seed_field_with_dice_and_lock(qtbot, tmp_path) -> None:
    panel = SettingsPanel(GenerateState(HistoryStore(tmp_path)))
    qtbot.addWidget(panel)
    assert panel.findChild(SeedEdit, "seedSpin") is panel.seedSpin
    panel.seedSpin.setValue(3_000_000_000)
    panel.seedLockButton.setChecked(True)
    s = panel.settings()
    assert (s.seed, s.seed_locked) == (3_000_000_000, True)
    seen = {panel.settings().seed}
    for _ in range(5):
        qtbot.mouseClick(panel.diceButton, Qt.MouseButton.LeftButton)
        seed = panel.settings().seed
        assert 0 <= seed <= 2**31 - 1 and panel.seedSpin.text() == str(seed)
        seen.add(seed)
    assert len(seen) >= 5  # five dice rolls from 2³¹ seeds: a repeat is (nearly) impossible
    panel.set_settings(s)
    assert panel.seedSpin.text() == "3000000000" and panel.seedLockButton.isChecked()
