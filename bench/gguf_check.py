"""A LoRA exported with ``--format gguf`` run in llama.cpp itself (llama-cpp-python), against adaptlab:
as an adapter on the packaged base GGUF, and merged into one GGUF (``--merged f32,q8_0``).

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
    ap.add_argument("--artifact", type=Path, required=True, help="a LoRA artifact folder (on the base it names)")
    ap.add_argument("--data", required=True, help="the rows to check (a file or dataset; its test split is used)")
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--merged", default="f32,q8_0", help="merged GGUF types to check too ('' for none)")
    ap.add_argument("--out", type=Path, default=Path("docs/results/gguf_check"))
    a = ap.parse_args()
    from adaptlab.backends.local import LocalBackend
    from adaptlab.export_gguf import export_gguf
    from adaptlab.utils import provenance_lines

    base, art, texts, prompts = setup(a.artifact, a.data, a.rows)
    merged = [t for t in a.merged.split(",") if t]
    with tempfile.TemporaryDirectory() as d:
        out = export_gguf(a.artifact, Path(d) / "gguf", base)
        t0 = time.perf_counter()
        ours = [first_line(t) for t in art.backend.generate(prompts, max_new_tokens=a.max_tokens)]
        ours_s = time.perf_counter() - t0
        labels = art.predict(texts)
        runs = [("adapter", out, True, "base.gguf"), ("base alone", out, False, "base.gguf")]
        for t in merged:
            runs.append((f"merged {t}", export_gguf(a.artifact, Path(d) / t, base, gguf_type=t), False, "model.gguf"))
        results = {}
        for name, folder, adapter, model_file in runs:
            llm = llama(folder, adapter, model_file)
            t0 = time.perf_counter()
            theirs = [
                first_line(llm.create_completion(p, max_tokens=a.max_tokens, temperature=0.0)["choices"][0]["text"])
                for p in prompts
            ]
            results[name] = {
                "texts": theirs,
                "seconds": time.perf_counter() - t0,
                "file_mb": Path(llm.model_path).stat().st_size / 2**20,
            }
            del llm
        plain_texts = [first_line(t) for t in LocalBackend(base).generate(prompts, max_new_tokens=a.max_tokens)]
    label_of = None
    if art.labels:  # the label whose verbalized text llama.cpp's answer starts with (the longest such)
        texts_of = {t.strip(): lab for t, lab in zip(art.label_texts(), art.labels)}

        def label_of(cpp):
            return [max((lab for t, lab in texts_of.items() if c.startswith(t)), key=len, default=None) for c in cpp]

    n = len(texts)
    variants = {}
    for name, r in results.items():
        reference = plain_texts if name == "base alone" else ours
        row = {
            "greedy_text_agreement": sum(x == y for x, y in zip(reference, r["texts"])) / n,
            "seconds": r["seconds"],
            "file_mb": r["file_mb"],
        }
        if label_of and name != "base alone":
            got = label_of(r["texts"])
            row["label_agreement"] = sum(lab == p for lab, p in zip(got, labels)) / n
            row["text_is_a_label"] = sum(lab is not None for lab in got) / n
        variants[name] = row
    cpp = results["adapter"]["texts"]
    report = meta(
        rows=n,
        max_tokens=a.max_tokens,
        variants=variants,
        greedy_text_agreement=variants["adapter"]["greedy_text_agreement"],
        label_agreement=variants["adapter"].get("label_agreement"),
        base_alone_text_agreement=variants["base alone"]["greedy_text_agreement"],
        adaptlab_seconds=ours_s,
        examples=[
            {
                "input": t,
                "adaptlab": o,
                "llama_cpp": c,
                "adaptlab_label": lab,
                **{name: r["texts"][i] for name, r in results.items() if name.startswith("merged")},
            }
            for i, (t, o, c, lab) in enumerate(list(zip(texts, ours, cpp, labels))[:10])
        ],
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    md = [
        "# An exported LoRA in llama.cpp itself",
        "",
        *provenance_lines(report, PACKAGES),
        "",
        f"{n} test rows; greedy text = the first line of {a.max_tokens} greedy tokens; label = the label "
        "llama.cpp's text starts with, against the label adaptlab scores. The control is the base "
        "alone (no adapter) in both.",
        "",
        "| in llama.cpp | file | same greedy text as adaptlab | text is a label | same label | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in variants.items():
        what = {"adapter": "adapter.gguf on the packaged base GGUF", "base alone": "the packaged base GGUF (control)"}
        lab = f"{v['text_is_a_label']:.0%} | {v['label_agreement']:.0%}" if "label_agreement" in v else "- | -"
        md.append(
            f"| {what.get(name, name + ' GGUF')} | {v['file_mb']:.0f} MB | {v['greedy_text_agreement']:.0%} | "
            f"{lab} | {v['seconds']:.1f} |"
        )
    heads = [k for k in results if k.startswith("merged")]
    md += [
        "",
        "| input | adaptlab | llama.cpp, adapter | " + " | ".join(f"llama.cpp, {h}" for h in heads) + " |",
        "|---" * (3 + len(heads)) + "|",
    ]
    md += [
        f"| {e['input'][:60]} | {e['adaptlab']} | {e['llama_cpp']} | " + " | ".join(e[h] for h in heads) + " |"
        for e in report["examples"]
    ]
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
