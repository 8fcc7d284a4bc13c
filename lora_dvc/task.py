"""What the classifier predicts, decided once: the label names, single- or multi-label (transformers'
`problem_type`), the multi-label threshold and how a label set is joined in a table.

`Task.read` takes it from the tokenize stage's meta.json, data/prepared/labels.json and params (train,
evaluate); `Task.of_model` from a loaded model's config (predict and export, which may read an export
folder with no meta.json). Every stage and command asks the Task; nothing else compares problem_type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

MULTI_LABEL = "multi_label_classification"  # transformers' config.problem_type for multi-label rows
DEFAULT_DELIMITER = "|"


@dataclass(frozen=True)
class Task:
    labels: tuple[str, ...]
    multi_label: bool = False
    threshold: float = 0.5  # multi-label: a label is predicted at sigmoid probability >= this
    delimiter: str = DEFAULT_DELIMITER  # multi-label: joins a label set in tables (data.label_delimiter)

    @classmethod
    def read(cls, params=None, root: Path | str = ".") -> Task:
        """The tokenize stage's task (meta.json, labels.json) with params' threshold and delimiter."""
        from lora_dvc.artifacts import read_labels, read_tokenized_meta

        meta = read_tokenized_meta(Path(root))
        task = cls(tuple(read_labels(Path(root))), bool(meta.get("multi_label")))
        return task.with_params(params)

    @classmethod
    def of_model(cls, labels: list[str], problem_type: str | None, params=None) -> Task:
        """The task of a loaded model: its config's problem_type decides single or multi-label."""
        return cls(tuple(labels), problem_type == MULTI_LABEL).with_params(params)

    def with_params(self, params) -> Task:
        if params is None:
            return self
        delimiter = params.data.label_delimiter or DEFAULT_DELIMITER
        return replace(self, threshold=params.evaluate.threshold, delimiter=delimiter)

    @property
    def problem_type(self) -> str | None:
        """transformers' config.problem_type: BCEWithLogitsLoss on multi-hot rows, or its default."""
        return MULTI_LABEL if self.multi_label else None

    @property
    def logit_threshold(self) -> float:
        """The threshold as a logit: a label is predicted where its logit is at or above this."""
        return math.log(self.threshold / (1 - self.threshold)) if self.multi_label else 0.0

    def probabilities(self, logits):
        """Per-label sigmoids (multi-label) or a softmax over the classes, of a torch tensor of logits."""
        return logits.sigmoid() if self.multi_label else logits.softmax(-1)

    def decisions(self, probs: np.ndarray) -> np.ndarray:
        """Multi-label: 1 where a label is predicted (probability >= threshold), as int64."""
        return (np.asarray(probs) >= self.threshold).astype(np.int64)

    def predicted(self, probs: np.ndarray) -> list:
        """Each row's label name, or for a multi-label task its predicted label set (a list, maybe empty)."""
        if self.multi_label:
            return [self.names(row) for row in self.decisions(probs)]
        return [self.labels[i] for i in np.asarray(probs).argmax(axis=1)]

    def names(self, multi_hot) -> list[str]:
        """The label names of a multi-hot row."""
        return [name for name, on in zip(self.labels, multi_hot) if on]

    def join(self, names) -> str:
        """A label set as one table cell."""
        return self.delimiter.join(names)
