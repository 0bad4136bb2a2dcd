"""The Train form's schedule combo and "Learn variance (Improved DDPM)" box (real Qt widgets)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QCheckBox, QComboBox

from diffusion_studio.ui.train.form_panel import TrainFormPanel
from diffusion_studio.ui.train.settings import TrainForm


def _panel(qtbot, tmp_path: Path) -> TrainFormPanel:
    panel = TrainFormPanel(tmp_path / "runs")
    qtbot.addWidget(panel)
    return panel


def test_schedule_combo_and_learn_sigma_box_fill_the_form(qtbot, tmp_path: Path) -> None:
    panel = _panel(qtbot, tmp_path)
    combo = panel.findChild(QComboBox, "trainScheduleCombo")
    box = panel.findChild(QCheckBox, "learnSigmaCheck")
    assert combo is not None and box is not None and box.text() == "Learn variance (Improved DDPM)"
    assert [combo.itemText(i) for i in range(combo.count())] == [
        "Linear (DDPM) (preset)", "Linear (DDPM)", "Cosine (Improved DDPM)"]
    assert panel.form().schedule is None and panel.form().learn_sigma is False  # the preset's, off
    combo.setCurrentIndex(combo.findData("cosine"))
    box.setChecked(True)
    form = panel.form()
    assert form.schedule == "cosine" and form.learn_sigma is True
    assert form.arguments()[-4:] == ["--schedule", "cosine", "--learn-sigma", "--json"]
    # set_form shows a saved form again, the preset entry included
    panel.set_form(TrainForm(out=form.out, schedule="linear"))
    assert combo.currentData() == "linear" and not box.isChecked()
    panel.set_form(TrainForm(out=form.out, schedule=None, learn_sigma=True))
    assert combo.currentIndex() == 0 and panel.form().schedule is None and panel.form().learn_sigma


def test_resume_and_running_lock_the_schedule_and_variance_head(qtbot, tmp_path: Path) -> None:
    panel = _panel(qtbot, tmp_path)
    assert panel.trainScheduleCombo.isEnabled() and panel.learnSigmaCheck.isEnabled()
    panel.resumeCheck.setChecked(True)  # a resumed run keeps its config's schedule and head
    assert not panel.trainScheduleCombo.isEnabled() and not panel.learnSigmaCheck.isEnabled()
    panel.resumeCheck.setChecked(False)
    assert panel.trainScheduleCombo.isEnabled() and panel.learnSigmaCheck.isEnabled()
    panel.set_running(training=True, exporting=False, can_export=False, can_open=False)
    assert not panel.trainScheduleCombo.isEnabled() and not panel.learnSigmaCheck.isEnabled()
    panel.resumeCheck.setChecked(True)  # toggles while busy do not unlock them
    panel.resumeCheck.setChecked(False)
    assert not panel.learnSigmaCheck.isEnabled()
    panel.set_running(training=False, exporting=False, can_export=True, can_open=False)
    assert panel.trainScheduleCombo.isEnabled() and panel.learnSigmaCheck.isEnabled()
    # the folder row still follows the dataset
    panel.datasetCombo.setCurrentIndex(panel.datasetCombo.findData("folder"))
    assert panel.folderEdit.isEnabled()
    panel.datasetCombo.setCurrentIndex(panel.datasetCombo.findData("shapes"))
    assert not panel.folderEdit.isEnabled()
