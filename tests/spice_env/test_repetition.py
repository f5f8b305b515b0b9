"""R-Zero's repetition penalty: sentence BLEU and average-linkage clusters.

The expected BLEU values and the clusters were computed with nltk 3.10.4
(``sentence_bleu([reference.split()], hypothesis.split(),
smoothing_function=SmoothingFunction().method1)``) and scikit-learn 1.9.1
(``AgglomerativeClustering(n_clusters=None, distance_threshold=0.5, metric="precomputed",
linkage="average")`` on ``1 - BLEU``), the tools R-Zero's reward uses."""

from __future__ import annotations

import numpy as np
import pytest

from spice_env.repetition import (
    average_linkage_clusters,
    bleu_distances,
    repetition_penalties,
    sentence_bleu,
)

BLEU_CASES = [
    ("the cat sat on the mat", "the cat sat on the mat", 1.0),
    ("the cat sat on a mat today", "the cat sat on the mat", 0.4347208719449914),
    ("a b", "a b c", 0.19180183554164504),
    ("What is 2 + 3 times 4?", "What is 2 + 3 times 5?", 0.8091067115702212),
    ("x y z", "p q r", 0.0),
    ("one two three four five six", "one two three four five six seven eight",
     0.7165313105737893),
]

QUESTIONS = ["What is 2 + 3 times 4?", "What is 2 + 3 times 5?", "Name the capital of France.",
             "What is 2 + 3 times 4 ?",
             "Which river flows through Paris and into the English Channel?",
             "Name the capital city of France.", "How many sides does a hexagon have?",
             "How many sides does a pentagon have?"]
SKLEARN_LABELS = [2, 2, 4, 2, 3, 1, 0, 0]


def partition(labels: list[int]) -> list[list[int]]:
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    return sorted(groups.values())


@pytest.mark.parametrize(("hypothesis", "reference", "expected"), BLEU_CASES)
def test_sentence_bleu_matches_nltk(hypothesis: str, reference: str, expected: float) -> None:
    assert sentence_bleu(hypothesis, reference) == pytest.approx(expected, abs=1e-12)


def test_clusters_match_scikit_learn() -> None:
    labels = average_linkage_clusters(bleu_distances(QUESTIONS))
    assert partition(labels) == partition(SKLEARN_LABELS)
    assert labels[0] == 0  # numbered by first item


def test_penalty_is_cluster_size_over_outputs_scored() -> None:
    penalties = repetition_penalties(QUESTIONS, scored=10)
    assert penalties == [0.3, 0.3, 0.1, 0.3, 0.1, 0.1, 0.2, 0.2]
    assert repetition_penalties([], 4) == []
    with pytest.raises(ValueError, match="every question"):
        repetition_penalties(QUESTIONS, scored=3)


def test_distances_are_symmetric_with_a_zero_diagonal() -> None:
    matrix = bleu_distances([*QUESTIONS[:4], "", ""])
    assert np.array_equal(matrix, matrix.T) and not matrix.diagonal().any()
    assert matrix[4, 5] == 1.0  # empty questions share nothing
    assert average_linkage_clusters(np.zeros((0, 0))) == []
