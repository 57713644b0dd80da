"""A LoRA exported with ``--format gguf`` run in llama.cpp itself (llama-cpp-python), against adaptlab.

For each of N test rows: adaptlab's greedy continuation of the artifact's prompt, and llama.cpp's
(the packaged Q4_K_M base GGUF with the exported adapter, temperature 0), both cut at the first line
break; and the label adaptlab scores against the label llama.cpp's text starts with. adaptlab runs the
base dequantized to fp32 from the same GGUF, so the weights are the same numbers; llama.cpp computes
in its own kernels (quantized matmuls), so a near tie may go the other way. Also the base model alone
in both (no adapter), as the control.

    python bench/gguf_check.py --artifact ART --data FILE --out docs/results/gguf_check
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llamacpp_kit import PACKAGES, llama, meta, setup  # noqa: E402


def first_line(text: str) -> str:
    return text.strip().split("\n")[0].strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifact", type=Path, required=True, help="a LoRA artifact folder on gemma-3-270m")
    ap.add_argument("--data", required=True, help="the rows to check (a file or dataset; its test split is used)")
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("docs/results/gguf_check"))
    a = ap.parse_args()
    from adaptlab.backends.local import LocalBackend
    from adaptlab.export_gguf import export_gguf
    from adaptlab.utils import provenance_lines

    base, art, texts, prompts = setup(a.artifact, a.data, a.rows)
    with tempfile.TemporaryDirectory() as d:
        out = export_gguf(a.artifact, Path(d) / "gguf", base)
        t0 = time.perf_counter()
        ours = [first_line(t) for t in art.backend.generate(prompts, max_new_tokens=a.max_tokens)]
        ours_s = time.perf_counter() - t0
        labels = art.predict(texts)
        results = {}
        for name, adapter in (("adapter", True), ("base alone", False)):
            llm = llama(out, adapter)
            t0 = time.perf_counter()
            theirs = [
                first_line(llm.create_completion(p, max_tokens=a.max_tokens, temperature=0.0)["choices"][0]["text"])
                for p in prompts
            ]
            results[name] = {"texts": theirs, "seconds": time.perf_counter() - t0}
            del llm
        plain_texts = [first_line(t) for t in LocalBackend(base).generate(prompts, max_new_tokens=a.max_tokens)]
    cpp = results["adapter"]["texts"]
    label_of = None
    if art.labels:  # the label whose verbalized text llama.cpp's answer starts with (the longest such)
        texts_of = {t.strip(): lab for t, lab in zip(art.label_texts(), art.labels)}
        label_of = [max((lab for t, lab in texts_of.items() if c.startswith(t)), key=len, default=None) for c in cpp]
    n = len(texts)
    report = meta(
        rows=n,
        max_tokens=a.max_tokens,
        greedy_text_agreement=sum(x == y for x, y in zip(ours, cpp)) / n,
        label_agreement=(sum(lab == p for lab, p in zip(label_of, labels)) / n) if label_of else None,
        llama_cpp_text_is_a_label=(sum(lab is not None for lab in label_of) / n) if label_of else None,
        base_alone_text_agreement=sum(x == y for x, y in zip(plain_texts, results["base alone"]["texts"])) / n,
        adaptlab_seconds=ours_s,
        llama_cpp_seconds=results["adapter"]["seconds"],
        examples=[
            {"input": t, "adaptlab": o, "llama_cpp": c, "adaptlab_label": lab}
            for t, o, c, lab in list(zip(texts, ours, cpp, labels))[:10]
        ],
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    md = [
        "# An exported LoRA in llama.cpp itself",
        "",
        *provenance_lines(report, PACKAGES),
        "",
        f"- greedy text (first line, {a.max_tokens} tokens) equal in adaptlab and llama.cpp: "
        f"{report['greedy_text_agreement']:.0%} of {n} test rows",
        f"- the same base without the adapter, as the control: {report['base_alone_text_agreement']:.0%}",
    ]
    if label_of:
        md += [
            f"- llama.cpp's text starts with a label on {report['llama_cpp_text_is_a_label']:.0%} of rows; that label "
            f"is adaptlab's (scored) label on {report['label_agreement']:.0%}"
        ]
    md += ["", "| input | adaptlab | llama.cpp |", "|---|---|---|"]
    md += [f"| {e['input'][:60]} | {e['adaptlab']} | {e['llama_cpp']} |" for e in report["examples"]]
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
