"""Generation: ``{"input", "target"}`` rows; the model writes the answer, ended by its end of
sequence; ROUGE-L ranks, with exact match, chrF, embedding similarity and the task's own checks
(:mod:`adaptlab.evaluation.text_metrics`) beside it. Inputs given more than once are one input
with several references."""

from __future__ import annotations

from adaptlab.prompts import PromptTemplate
from adaptlab.tasks.pairs import InputAnswerTask

MAX_NEW_TOKENS = 256  # the decoding limit a task's longest answer may set, at most


class GenerationTask(InputAnswerTask):
    name = "generation"
    summary = "free text per input (ROUGE-L, exact match, chrF, embedding similarity)"
    fields = ("input", "target")
    metric = "rouge_l"
    report_metrics = ("rouge_l", "chrf", "exact_match")
    templates = (
        PromptTemplate(
            "input-output", "{examples}Input: {input}\nOutput:", example_format="Input: {input}\nOutput: {target}\n\n"
        ),
        PromptTemplate(
            "instruct",
            "{instruction}\n\n{examples}Input: {input}\nOutput:",
            instruction="Rewrite the input as requested, following the examples.",
            example_format="Input: {input}\nOutput: {target}\n\n",
        ),
    )
    paraphrases = (
        "Rewrite the input as requested, following the examples.",
        "Turn the structured input into one fluent sentence.",
        "Produce the output for the input, in the same style as the examples.",
    )
    train_frame = "Input: {text}\nOutput:"
    ends_with_eos = True
    # A metric in [0, 1] spread about 0.25 per row (ROUGE-L rows in the committed ViGGO and E2E
    # grids spread less): variance 0.0625.
    row_variance = 0.0625

    def evaluate(self, artifact, data):
        from adaptlab.evaluation.generation import references_by_input
        from adaptlab.evaluation.text_metrics import generation_scores

        texts, refs = references_by_input(data.examples)
        pred = artifact.predict(texts)
        out, per_row = generation_scores(pred, refs, inputs=texts)
        detail = [
            {"id": i, "input": t, "reference": r[0], "references": len(r), "output": p, "metric": m["rouge_l"], **m}
            for i, (t, r, p, m) in enumerate(zip(texts, refs, pred, per_row))
        ]
        return out, detail, texts

    def row_keys(self, data):
        """A row per distinct input (its references pooled), as :meth:`evaluate` scores them."""
        from adaptlab.evaluation.generation import references_by_input

        return references_by_input(data.examples)[0]

    def default_decoding(self, train, count_tokens):
        """Decode up to the longest train answer plus a margin (one rule for every strategy)."""
        longest = max(count_tokens(ex.label) for ex in train.examples)
        return {"max_new_tokens": min(MAX_NEW_TOKENS, longest + 8), "num_beams": 1}
