"""MkDocs hook: the command-line reference is generated from the typer app at build time, so a
removed or renamed option can never stay documented (``mkdocs build --strict`` runs in ``make test``)."""

MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri.startswith("results/") and page.file.src_uri.endswith("report.md"):
        return _literal_brackets(markdown)
    if README_MARKER in markdown:
        return _readme_page(markdown)
    if MARKER not in markdown:
        return markdown
    import typer.main
    from typer.cli import get_docs_for_click

    from adaptlab.cli import app

    command = typer.main.get_command(app)
    ctx = typer.main.get_command(app).make_context("adaptlab", [], resilient_parsing=True)
    text = get_docs_for_click(obj=command, ctx=ctx, name="adaptlab", title="Command line")
    # The generated page has its own top heading; the marker's page keeps its own title.
    body = text.split("\n", 1)[1] if text.startswith("# ") else text
    return markdown.replace(MARKER, body)


README_MARKER = "<!-- readme -->"


def _readme_page(markdown: str) -> str:
    """The front page is the README (one source), its links made relative to docs/."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    return markdown.replace(README_MARKER, readme.replace("](docs/", "]("))


def _literal_brackets(markdown: str) -> str:
    """A generated compare report quotes model outputs ("see [2][4]"): their brackets are text, not
    reference links (which the cross-reference plugin would try to resolve). Inline links and
    images (``[x](y)``, ``![x](y)``) stay links."""
    import re

    return re.sub(r"(?<![!\\])\[([^\]\n]*)\](?!\()", r"\\[\1\\]", markdown)
