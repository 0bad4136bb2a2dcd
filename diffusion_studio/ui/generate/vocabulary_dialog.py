"""Help ▸ What this model knows: the loaded model's vocabulary and example prompts (a view).

The words come from the bundle (`LoadedBundle.vocabulary`, the words its training captions used)
and the examples from `core.vocabulary.example_prompts`. A bundle that declares no vocabulary
says so. Double-clicking an example (or "Use this prompt") puts it into the prompt box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.core.vocabulary import STOP_WORDS, example_prompts

if TYPE_CHECKING:
    from diffusion_studio.ui.models import LoadedModel

NO_VOCABULARY = "This model declares no vocabulary: it cannot say which words it knows."


class VocabularyDialog(QDialog):
    """The words a model knows and a few prompts that use only them."""

    promptChosen = Signal(str)

    def __init__(self, model_name: str, vocabulary: Sequence[str] | None, conditioning: str = "text",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("vocabularyDialog")
        self.setWindowTitle(f"What {model_name} knows")
        layout = QVBoxLayout(self)
        self.summaryLabel = QLabel(objectName="vocabularySummary")
        self.summaryLabel.setWordWrap(True)
        self.summaryLabel.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(self.summaryLabel)
        self.wordsView = QPlainTextEdit(objectName="vocabularyWords", readOnly=True)
        self.examplesList = QListWidget(objectName="examplePromptList")
        self.examplesList.itemDoubleClicked.connect(lambda item: self._choose(item.text()))
        self.useButton = QPushButton("Use this prompt", objectName="useExampleButton")
        self.useButton.clicked.connect(self._use_current)
        if conditioning != "text":
            self.summaryLabel.setText(f"{model_name} is not text-conditioned: it ignores the prompt.")
            words: list[str] = []
        elif vocabulary is None:
            self.summaryLabel.setText(NO_VOCABULARY)
            words = []
        else:
            words = sorted({w.lower() for w in vocabulary if w and w.lower() not in STOP_WORDS})
            self.summaryLabel.setText(
                f"{model_name} learned {len(words)} words from its training captions; other words "
                "(except a, the, on, in, …) mean nothing to it. An empty prompt makes an unconditional image."
            )
        if words:
            self.wordsView.setPlainText(", ".join(words))
            self.wordsView.setMaximumHeight(self.wordsView.fontMetrics().lineSpacing() * 6 + 12)
            layout.addWidget(self.wordsView)
            examples = example_prompts(list(vocabulary or words), 5)
            layout.addWidget(QLabel("Example prompts (double-click to use):"))
            self.examplesList.addItems(examples)
            if examples:
                self.examplesList.setCurrentRow(0)
            layout.addWidget(self.examplesList)
            layout.addWidget(self.useButton, 0, Qt.AlignmentFlag.AlignLeft)
        else:
            self.wordsView.hide()
            self.examplesList.hide()
            self.useButton.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(520, 420 if words else 140)

    @classmethod
    def for_model(cls, model: LoadedModel | None, parent: QWidget | None = None) -> VocabularyDialog:
        """The dialog for the loaded model (or for none: nothing declared)."""
        if model is None:
            return cls("No model", None, "text", parent)
        return cls(model.name, model.vocabulary, model.conditioning, parent)

    def words(self) -> list[str]:
        text = self.wordsView.toPlainText()
        return text.split(", ") if text else []

    def examples(self) -> list[str]:
        return [self.examplesList.item(i).text() for i in range(self.examplesList.count())]

    def _use_current(self) -> None:
        item = self.examplesList.currentItem()
        if item is not None:
            self._choose(item.text())

    def _choose(self, prompt: str) -> None:
        self.promptChosen.emit(prompt)
        self.accept()
