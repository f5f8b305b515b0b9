"""R-Zero's repetition penalty: questions of one batch that read alike share a penalty.

With ``game.repetition_penalty=True`` the valid questions of an iteration are clustered by how much
their words overlap, and each question's Challenger reward is reduced by the size of its cluster
over the number of Challenger outputs scored in the batch (``|C| / n``), as in R-Zero:

* similarity is sentence BLEU on whitespace tokens (up to 4-grams, equal weights, the brevity
  penalty, and precisions with no matching n-gram counted as ``0.1 / count``); the distance is
  ``1 − BLEU``, taken for each pair once and used both ways;
* clusters are formed by average-linkage agglomerative clustering, merging while the distance
  between two clusters is below :data:`DISTANCE_THRESHOLD` (0.5).

The work grows with the square of the number of questions: about a second for 300 questions of 20
words on one core, ten for a thousand.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

DISTANCE_THRESHOLD = 0.5
"""Clusters closer than this (1 − BLEU, average linkage) are merged."""

MAX_ORDER = 4
_EPSILON = 0.1


def _ngrams(tokens: Sequence[str]) -> list[Counter[tuple[str, ...]]]:
    return [Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
            for n in range(1, MAX_ORDER + 1)]


def _bleu(hypothesis: list[Counter[tuple[str, ...]]], hyp_len: int,
          reference: list[Counter[tuple[str, ...]]], ref_len: int) -> float:
    if hyp_len == 0:
        return 0.0
    logs = 0.0
    for order, (hyp, ref) in enumerate(zip(hypothesis, reference, strict=True)):
        total = max(1, sum(hyp.values()))
        matched = sum(min(count, ref[gram]) for gram, count in hyp.items())
        if order == 0 and matched == 0:
            return 0.0
        logs += math.log((matched if matched else _EPSILON) / total) / MAX_ORDER
    brevity = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return brevity * math.exp(logs)


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """BLEU of ``hypothesis`` against one ``reference`` (whitespace tokens; see the module
    docstring for the smoothing)."""
    hyp, ref = hypothesis.split(), reference.split()
    return _bleu(_ngrams(hyp), len(hyp), _ngrams(ref), len(ref))


def bleu_distances(texts: Sequence[str]) -> np.ndarray:
    """The symmetric matrix of ``1 − BLEU`` between texts (each pair computed once, the earlier
    text as the hypothesis); the diagonal is 0."""
    tokens = [text.split() for text in texts]
    grams = [_ngrams(t) for t in tokens]
    size = len(texts)
    out = np.zeros((size, size))
    for i in range(size):
        for j in range(i + 1, size):
            distance = 1.0 - _bleu(grams[i], len(tokens[i]), grams[j], len(tokens[j]))
            out[i, j] = out[j, i] = distance
    return out


def average_linkage_clusters(distances: np.ndarray, threshold: float = DISTANCE_THRESHOLD
                             ) -> list[int]:
    """A cluster label per item: average-linkage agglomerative clustering of a distance matrix,
    merging the closest pair of clusters while their distance is below ``threshold``. Labels are
    numbered in order of each cluster's first item."""
    size = len(distances)
    if size == 0:
        return []
    work = np.array(distances, dtype=float)
    np.fill_diagonal(work, np.inf)
    members = {i: [i] for i in range(size)}
    while len(members) > 1:
        flat = int(np.argmin(work))
        a, b = divmod(flat, size)
        if not work[a, b] < threshold:
            break
        a, b = min(a, b), max(a, b)
        na, nb = len(members[a]), len(members[b])
        merged = (na * work[a] + nb * work[b]) / (na + nb)  # Lance-Williams, average linkage
        work[a], work[:, a] = merged, merged
        work[a, a] = np.inf
        work[b], work[:, b] = np.inf, np.inf
        members[a].extend(members.pop(b))
    root_of = {item: root for root, items in members.items() for item in items}
    label_of: dict[int, int] = {}
    for item in range(size):
        label_of.setdefault(root_of[item], len(label_of))
    return [label_of[root_of[item]] for item in range(size)]


def repetition_penalties(questions: Sequence[str], scored: int) -> list[float]:
    """Each question's penalty ``|C| / scored``: the size of its BLEU cluster over the number of
    Challenger outputs scored in the batch (valid or not, at least ``len(questions)``)."""
    if not questions:
        return []
    if scored < len(questions):
        raise ValueError(f"scored ({scored}) must count every question ({len(questions)})")
    labels = average_linkage_clusters(bleu_distances(questions))
    sizes = Counter(labels)
    return [sizes[label] / scored for label in labels]
