"""Consistency under sampling: a confident classifier agrees with itself, a sampled generator varies."""

import pytest
import torch

from adaptlab.data.loading import Example, TaskData
from adaptlab.evaluation.consistency import consistency
from adaptlab.models.tiny import build_tiny
from adaptlab.strategies import get_strategy, make_config

FOOD = TaskData(
    "classification",
    [
        Example(f"item {w}", lab, i + 1)
        for i, (w, lab) in enumerate([("apple", "fruit"), ("pear", "fruit"), ("kale", "veg"), ("leek", "veg")])
    ],
    "food",
    label_names=["fruit", "veg"],
)
ECHO = TaskData("generation", [Example(f"say {w}", w, i + 1) for i, w in enumerate(["ab", "cd", "ef"])], "echo")


def test_classification_agreement_follows_the_label_distribution():
    base = build_tiny()
    art = get_strategy("zero_shot").strategy_cls(make_config("zero_shot")).fit(base, FOOD)
    c = consistency(art, FOOD, n=8, temperature=1.0, seed=0)
    assert c["inputs"] == 4 and 0.5 <= c["agreement"] <= 1 and 0 <= c["unanimous"] <= 1
    art.scores = lambda texts: torch.tensor([[50.0, 0.0]] * len(texts))  # certain: every sample agrees
    assert consistency(art, FOOD, n=8, temperature=1.0)["agreement"] == 1.0
    art.scores = lambda texts: torch.zeros(len(texts), 2)  # a coin: about half agree
    assert consistency(art, FOOD, n=400, temperature=1.0)["agreement"] < 0.6
    again = consistency(art, FOOD, n=8, temperature=1.0, seed=3)
    assert again == consistency(art, FOOD, n=8, temperature=1.0, seed=3)  # seeded


def test_generation_spread_and_pairwise_similarity():
    base = build_tiny()
    art = get_strategy("zero_shot").strategy_cls(make_config("zero_shot")).fit(base, ECHO)
    hot = consistency(art, ECHO, n=3, temperature=1.5, seed=0)
    assert hot["inputs"] == 3 and 0 <= hot["pairwise_similarity"] < 1 and hot["distinct_outputs"] > 1
    cold = consistency(art, ECHO, n=3, temperature=0.01, seed=0)
    assert cold["pairwise_similarity"] >= hot["pairwise_similarity"]
    with pytest.raises(ValueError, match="n=1"):
        consistency(art, ECHO, n=1)
