"""The classical baseline: TF-IDF (char 2-5 + word 1-2 n-grams) and logistic regression.

Chosen with `train.method: tfidf`; it runs through the same prepare/evaluate stages and lands in
the same metrics, so every transformer row can be read against it. The fitted model is stored
without pickle: vocabularies and IDF weights as JSON/safetensors, coefficients as safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

VECTORIZERS = {
    "char": dict(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, max_features=300_000),
    "word": dict(analyzer="word", ngram_range=(1, 2), min_df=1, sublinear_tf=True, max_features=300_000),
}
C = 10.0


class TfidfClassifier:
    """char + word TF-IDF features, multinomial logistic regression."""

    def __init__(self) -> None:
        self.vectorizers = {name: TfidfVectorizer(**kw) for name, kw in VECTORIZERS.items()}
        self.classifier = LogisticRegression(C=C, max_iter=2000)

    def features(self, texts: list[str], fit: bool = False):
        parts = [v.fit_transform(texts) if fit else v.transform(texts) for v in self.vectorizers.values()]
        return hstack(parts).tocsr()

    def fit(self, texts: list[str], labels: np.ndarray) -> TfidfClassifier:
        self.classifier.fit(self.features(texts, fit=True), labels)
        return self

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.classifier.predict_proba(self.features(texts))

    @property
    def n_params(self) -> int:
        return int(self.classifier.coef_.size + self.classifier.intercept_.size)

    def save(self, folder: Path) -> None:
        tensors = {f"idf.{name}": torch.from_numpy(v.idf_.astype(np.float64)) for name, v in self.vectorizers.items()}
        tensors["coef"] = torch.from_numpy(np.ascontiguousarray(self.classifier.coef_))
        tensors["intercept"] = torch.from_numpy(np.ascontiguousarray(self.classifier.intercept_))
        tensors["classes"] = torch.from_numpy(self.classifier.classes_.astype(np.int64))
        save_file(tensors, folder / "tfidf_model.safetensors")
        vocab = {name: {term: int(i) for term, i in v.vocabulary_.items()} for name, v in self.vectorizers.items()}
        (folder / "tfidf_vocabulary.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> TfidfClassifier:
        model = cls()
        tensors = load_file(folder / "tfidf_model.safetensors")
        vocab = json.loads((folder / "tfidf_vocabulary.json").read_text(encoding="utf-8"))
        for name, vectorizer in model.vectorizers.items():
            vectorizer.vocabulary_ = vocab[name]
            vectorizer.idf_ = tensors[f"idf.{name}"].numpy()
        model.classifier.coef_ = tensors["coef"].numpy()
        model.classifier.intercept_ = tensors["intercept"].numpy()
        model.classifier.classes_ = tensors["classes"].numpy()
        return model

    @staticmethod
    def is_saved_in(folder: Path) -> bool:
        return (folder / "tfidf_model.safetensors").exists()
