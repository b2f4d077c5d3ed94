"""Numbers about predictions, computed in one place: the confusion matrix, per-class accuracy, the most confused
pairs, the most confident mistakes and the calibration (reliability bins and the expected calibration error)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fashionmlp.data import CLASSES

N_CLASSES = len(CLASSES)
N_MISTAKES = 24  # confident mistakes shown: 4 rows of 6
N_PAIRS = 8  # most confused class pairs listed
N_BINS = 10  # reliability diagram: equal-width confidence bins over [0, 1]


def confusion_counts(true: torch.Tensor, predicted: torch.Tensor, classes: int = N_CLASSES) -> torch.Tensor:
    """(classes, classes) int64 counts on the CPU; rows are true classes, columns predicted ones. (Counted on
    the CPU: CUDA's bincount has no deterministic kernel, which torch refuses or warns about in deterministic
    mode, and a few thousand labels cost nothing to move.)"""
    index = (true * classes + predicted).cpu()
    return torch.bincount(index, minlength=classes * classes).view(classes, classes)


def confusion_of(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """confusion_counts of NumPy arrays, as a NumPy array."""
    return confusion_counts(torch.from_numpy(np.asarray(labels, dtype=np.int64)),
                            torch.from_numpy(np.asarray(predicted, dtype=np.int64))).numpy()


def per_class_accuracy(confusion: Sequence[Sequence[int]] | np.ndarray) -> list[float]:
    """The accuracy of each true class: the confusion matrix's diagonal over its row sums."""
    cm = np.asarray(confusion, dtype=np.float64)
    return (cm.diagonal() / np.maximum(cm.sum(axis=1), 1)).tolist()


@dataclass(frozen=True)
class Reliability:
    """Per confidence bin (lower, upper]: how many predictions, their accuracy and mean confidence."""

    edges: list[float]
    counts: list[int]
    accuracy: list[float | None]  # None for an empty bin
    confidence: list[float | None]
    ece: float | None  # None where a confidence is not finite (NaN weights): no error can be said
    nonfinite: int = 0  # the predictions left out of the bins for that

    def rows(self) -> list[dict]:
        """One dict per bin: lower, upper, count, accuracy, confidence."""
        return [{"lower": lo, "upper": hi, "count": c, "accuracy": a, "confidence": m}
                for lo, hi, c, a, m in zip(self.edges[:-1], self.edges[1:], self.counts, self.accuracy,
                                           self.confidence)]


def reliability(confidence: Sequence[float], correct: Sequence[bool], bins: int = N_BINS) -> Reliability:
    """Bin predictions by confidence into `bins` equal-width bins, (0, 1/bins], ..., and compute the expected
    calibration error: ECE = sum over bins of (n_b / N) * |accuracy_b - mean confidence_b| (Guo et al., 2017)."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if conf.shape != hit.shape or conf.ndim != 1:
        raise ValueError(f"confidence {conf.shape} and correct {hit.shape} must be 1-D and of equal length")
    # a NaN confidence (weights gone NaN) is no confidence: it was cast to a bin, all of them to 0.9-1.0
    finite = np.isfinite(conf)
    nonfinite = int((~finite).sum())
    conf, hit = conf[finite], hit[finite]
    # right-closed bins: a confidence of exactly 0.5 belongs to (0.4, 0.5]; 0 joins the first bin
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    hits = np.bincount(which, weights=hit, minlength=bins)
    confs = np.bincount(which, weights=conf, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc, mean_conf = hits / counts, confs / counts
    n = max(len(conf), 1)
    ece = float(sum(c / n * abs(a - m) for c, a, m in zip(counts, acc, mean_conf) if c))
    return Reliability([i / bins for i in range(bins + 1)], counts.tolist(),
                       [float(a) if c else None for c, a in zip(counts, acc)],
                       [float(m) if c else None for c, m in zip(counts, mean_conf)], None if nonfinite else ece,
                       nonfinite)


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool],
                               bins: int = N_BINS) -> float | None:
    return reliability(confidence, correct, bins).ece


def confident_mistakes(probs: np.ndarray, labels: np.ndarray, k: int = N_MISTAKES) -> np.ndarray:
    """Indices of the `k` wrong predictions with the highest confidence, most confident first."""
    predicted, confidence = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(predicted != labels)
    order = np.argsort(-confidence[wrong], kind="stable")  # ties keep the test set's order
    return wrong[order[:k]]


def confused_pairs(confusion: np.ndarray, k: int = N_PAIRS) -> list[dict]:
    """The `k` class pairs most often mistaken for each other, both directions counted (rows: true class)."""
    cm = np.asarray(confusion, dtype=np.int64)
    pairs = []
    for a in range(len(cm)):
        for b in range(a + 1, len(cm)):
            total = int(cm[a, b] + cm[b, a])
            if total:
                pairs.append({"classes": [CLASSES[a], CLASSES[b]], "total": total,
                              "first_as_second": int(cm[a, b]), "second_as_first": int(cm[b, a])})
    pairs.sort(key=lambda p: -p["total"])  # stable: equal totals keep class order
    return pairs[:k]
