"""The ``adaptlab`` command line: thin wrappers over the library functions.

Every command turns a library error (bad data, bad model, bad template) into one red line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from adaptlab.compare.config import CompareConfig, default_of, help_of
from adaptlab.data.formats import parse_columns
from adaptlab.data.loading import DataError, TaskData, load_file, load_label_names
from adaptlab.export import ExportConfig
from adaptlab.maintenance.drift import DriftConfig
from adaptlab.maintenance.improve import ImproveOptions
from adaptlab.maintenance.rebase import RebaseOptions
from adaptlab.models.base import DEFAULT_MODEL, ModelError
from adaptlab.prompts import TemplateError
from adaptlab.serving.service import ServeConfig
from adaptlab.tasks.base import list_tasks
from adaptlab.training.config import TrainConfig  # loaded with the compare config already

COLUMNS_HELP = help_of(CompareConfig, "columns")
MODEL_HELP = (
    "Base model: gemma-3-270m (default), smollm2-135m-instruct, tiny or tiny-llama (random, for tests), "
    "a .gguf file or a transformers model folder."
)
MODELS_HELP = help_of(CompareConfig, "model")  # written once, in the compare's config
PROPOSER_HELP = help_of(CompareConfig, "proposer")

app = typer.Typer(
    help="adaptlab: prompt-tune or fine-tune? Measure every strategy on your data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Check, list and write task datasets.", no_args_is_help=True)
models_app = typer.Typer(help="Inspect base models and their cache.", no_args_is_help=True)
registry_app = typer.Typer(
    help="Versioned artifacts: register, list, promote, roll back, delete, gc.", no_args_is_help=True
)
keys_app = typer.Typer(help="API keys for the server, each scoped to tasks.", no_args_is_help=True)
feedback_app = typer.Typer(help="Human feedback collected by the server.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(registry_app, name="registry")
app.add_typer(keys_app, name="keys")
app.add_typer(feedback_app, name="feedback")

console = Console()
err_console = Console(stderr=True)

EXPECTED_ERRORS = (DataError, ModelError, TemplateError)


def _fail(e: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


# ------------------------------------------------------------------ data
def _print_report(report, task: str) -> None:
    table = Table(title=f"{task} data", show_lines=False)
    for col in ("split", "source", "rows", "classes", f"length ({report.splits[0].length_unit}) min/mean/p95/max"):
        table.add_column(col)
    for s in report.splits:
        lt = s.length_tokens
        table.add_row(
            s.name,
            s.source,
            str(s.rows),
            str(len(s.class_counts)) if s.class_counts else "-",
            f"{lt['min']}/{lt['mean']}/{lt['p95']}/{lt['max']}",
        )
    console.print(table)
    train = report.splits[0]
    if train.class_counts:
        ct = Table(title="train class counts")
        ct.add_column("label")
        ct.add_column("rows", justify="right")
        for label, n in train.class_counts.items():
            ct.add_row(label, str(n))
        console.print(ct)
    if report.warnings:
        for w in report.warnings:
            console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    else:
        console.print("[green]no warnings[/]")


@data_app.command("check")
def data_check(
    file: str = typer.Argument(
        ..., help="Train file (.jsonl/.csv/.tsv), a folder of split files, or a dataset name (demo, sst2, ...)."
    ),
    eval_files: list[Path] = typer.Option(
        [], "--eval", help="Evaluation file(s) to check against the train file; repeatable."
    ),
    task: str | None = typer.Option(None, help="classification or generation; detected from the columns when omitted."),
    text_field: str | None = typer.Option(None, help="Column holding the input text (default: text / input)."),
    label_field: str | None = typer.Option(None, help="Column holding the label / target (default: label / target)."),
    columns: str | None = typer.Option(None, help=COLUMNS_HELP),
    labels: Path | None = typer.Option(None, help="labels.json declaring the label set; other labels are errors."),
    tokenizer: str = typer.Option(DEFAULT_MODEL, help="Model whose tokenizer measures lengths; 'none' counts words."),
    max_tokens: int = typer.Option(512, help="Warn about inputs longer than this."),
    data_dir: Path | None = typer.Option(
        None, help="Folder of named datasets (default $ADAPTLAB_DATA_DIR or ../shared/datasets)."
    ),
    redact: Path | None = typer.Option(
        None,
        help="Write a copy with personal data replaced by [EMAIL], [PHONE], "
        "...: a file for one data file, else a folder of the split files.",
    ),
) -> None:
    """Validate a dataset and print rows, classes, lengths in tokens, personal data found, and warnings."""
    from adaptlab.data.named import load_task
    from adaptlab.data.validation import validate

    try:
        if task is not None and task not in list_tasks():
            raise DataError(f"--task: unknown task '{task}'; use one of {', '.join(list_tasks())}")
        names = load_label_names(labels) if labels else None
        mapping = parse_columns(columns)
        if Path(file).is_file():
            train = load_file(
                file, task=task, text_field=text_field, label_field=label_field, label_names=names, columns=mapping
            )
            evals = {
                p.name: load_file(
                    p,
                    task=train.task,
                    text_field=text_field,
                    label_field=label_field,
                    label_names=names,
                    columns=mapping,
                )
                for p in eval_files
            }
        else:
            splits = load_task(
                file,
                data_dir_override=data_dir,
                task=task,
                text_field=text_field,
                label_field=label_field,
                columns=mapping,
            )
            train, evals = splits.train, {"dev": splits.dev, "test": splits.test}
        tok = None
        if tokenizer.lower() != "none":
            from adaptlab.models.base import load_tokenizer

            with console.status(f"loading tokenizer of {tokenizer}"):
                tok = load_tokenizer(tokenizer)
        report = validate(train, evals, tokenizer=tok, max_tokens=max_tokens)
        sources = list(dict.fromkeys(Path(d.source) for d in (train, *evals.values()) if Path(d.source).exists()))
    except EXPECTED_ERRORS as e:
        _fail(e)
    _print_report(report, train.task)
    try:
        _personal_data(sources, redact)
    except EXPECTED_ERRORS as e:
        _fail(e)


def _personal_data(sources: list[Path], redact: Path | None) -> None:
    """Print the personal data found in each file; with ``redact``, write redacted copies."""
    from adaptlab.privacy import NOT_DETECTED, redact_file, scan_file

    for src in sources:
        rep = scan_file(src)
        lines = rep.summary()
        console.print(f"personal data in {src}: " + ("none found" if not lines else f"{rep.total} finding(s)"))
        for line in lines:
            console.print(f"  {line}")
        if redact is not None:
            dst = redact if len(sources) == 1 and redact.suffix else redact / src.name
            n = redact_file(src, dst)
            console.print(f"  redacted copy ({n} rows): {dst}")
    console.print(f"  not detected: {'; '.join(NOT_DETECTED)}", style="dim")


@data_app.command("demo")
def data_demo(out: Path = typer.Option(Path("data/demo"), help="Folder to write train/dev/test.jsonl into.")) -> None:
    """Write the embedded demo dataset (Fernhill Home support intents) as JSONL files."""
    from adaptlab.data import demo

    folder = demo.write(out)
    console.print(f"wrote demo dataset to {folder}")


@data_app.command("list")
def data_list(data_dir: Path | None = typer.Option(None, help="Folder of named datasets.")) -> None:
    """List the named datasets that --data accepts."""
    from adaptlab.data.named import list_named

    try:
        for name in list_named(data_dir):
            console.print(name)
    except EXPECTED_ERRORS as e:
        _fail(e)


# ------------------------------------------------------------------ models
@models_app.command("list")
def models_list() -> None:
    """The named base models (any GGUF file or transformers folder loads too, by its path)."""
    from adaptlab.models.registry import list_models, resolve_model

    table = Table(title="named base models")
    for col in ("name", "also", "family", "what it is", "facts"):
        table.add_column(col)
    for name in list_models():
        spec = resolve_model(name)
        facts = ", ".join(f"{k}: {v}" for k, v in spec.facts.items()) or "-"
        table.add_row(name, ", ".join(spec.aliases) or "-", spec.family or "-", spec.summary, facts)
    console.print(table)


@models_app.command("info")
def models_info(
    model: str = typer.Option(DEFAULT_MODEL, help="Model name (gemma-3-270m, tiny), GGUF path or folder."),
    dtype: str = typer.Option("float32", help="float32 (CPU) or bfloat16 (GPU)."),
) -> None:
    """Parameters, vocabulary, context length and cache location of a base model."""
    from adaptlab.models.base import load_base, model_info

    t0 = time.perf_counter()
    try:
        with console.status(f"loading {model} (the first load dequantizes the GGUF, about a minute)"):
            base = load_base(model, dtype=dtype)
    except EXPECTED_ERRORS as e:
        _fail(e)
    info = model_info(base)
    info["load_seconds"] = round(time.perf_counter() - t0, 2)
    table = Table(title=f"base model {base.name}", show_header=False)
    for k, v in info.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    console.print(table)


@models_app.command("roofline")
def models_roofline(
    model: str = typer.Option(DEFAULT_MODEL, help="Model name (gemma-3-270m, tiny), GGUF path or folder."),
    batch: str = typer.Option("1,16,32", help="Decode batch sizes, comma-separated."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """This machine's matrix-product rates and memory bandwidth, and the fastest a decode step of
    MODEL can go at each batch size and weight type (what every engine benchmark divides by)."""
    from adaptlab.models import roofline
    from adaptlab.models.base import load_base
    from adaptlab.utils import set_torch_threads

    try:
        sizes = tuple(int(b) for b in batch.split(","))
        if any(b < 1 for b in sizes):
            raise ValueError
    except ValueError:
        _fail(ValueError(f"--batch {batch!r}: give positive integers separated by commas, e.g. 1,16,32"))
    set_torch_threads()
    try:
        base = load_base(model)
    except EXPECTED_ERRORS as e:
        _fail(e)
    machine = roofline.measure(base.device)
    shape = roofline.model_shape(base.model, base.name)
    rows = roofline.report(machine, shape, sizes)
    if as_json:
        print(json.dumps({"machine": machine.to_dict(), "model": dataclasses.asdict(shape), "decode": rows}, indent=1))
        return
    rates = ", ".join(f"{k} {v:g} GFLOP/s" for k, v in machine.gflops.items())
    console.print(f"{machine.device}, {machine.threads} threads: {rates}; memory read {machine.bandwidth_gbs:g} GB/s")
    console.print(
        f"{shape.name}: {shape.layer_params:,} parameters in the layers, {shape.head_params:,} in the LM head"
    )
    table = Table(title="decode limit (every weight read once a step)")
    for col in ("weights", "batch", "step ms", "tokens/s", "bound by"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["weights"], str(r["batch"]), f"{r['step_ms']:g}", f"{r['tokens_per_s']:g}", r["bound"])
    console.print(table)


# ------------------------------------------------------------------ evaluation
@app.command("eval")
def evaluate(
    data: str = typer.Option("demo", help="Dataset name, folder of split files, or a single file."),
    split: str = typer.Option("test", help="train, dev or test."),
    model: str = typer.Option(DEFAULT_MODEL, help=MODEL_HELP),
    limit: int | None = typer.Option(None, help="Evaluate a stratified sample of this many examples."),
    seed: int = typer.Option(0, help="Seed for splitting and sampling."),
    out: Path | None = typer.Option(None, help="Write the result as JSON here."),
    data_dir: Path | None = typer.Option(None, help="Folder of named datasets."),
) -> None:
    """Zero-shot accuracy of the unadapted base model (the baseline every strategy must beat)."""
    _zero_shot(data, split, model, limit, seed, out, data_dir)


def _zero_shot(data, split, model, limit, seed, out, data_dir) -> dict:
    from adaptlab.data.named import load_task
    from adaptlab.data.splits import subsample
    from adaptlab.evaluation.zero_shot import evaluate_zero_shot
    from adaptlab.models.base import load_base
    from adaptlab.utils import atomic_write_json, set_torch_threads

    set_torch_threads()
    try:
        splits = load_task(data, data_dir_override=data_dir, seed=seed)
        if split not in ("train", "dev", "test"):
            raise DataError(f"--split: unknown split '{split}'; use train, dev or test")
        part: TaskData = getattr(splits, split)
        if limit:
            part = subsample(part, n=limit, seed=seed)
        with console.status(f"loading {model}"):
            base = load_base(model)
        with console.status(f"zero-shot scoring {len(part)} examples x {len(part.labels)} labels"):
            result = evaluate_zero_shot(base, part)
    except EXPECTED_ERRORS as e:
        _fail(e)
    result = {"data": data, "split": split, **result}
    table = Table(title=f"zero-shot {base.name} on {data}[{split}]")
    for col in ("examples", "accuracy", "macro-F1", "prompt tokens", "examples/s"):
        table.add_column(col, justify="right")
    table.add_row(
        str(result["n"]),
        f"{result['accuracy']:.3f}",
        f"{result['macro_f1']:.3f}",
        f"{result['prompt_tokens']:.1f}",
        f"{result['examples_per_s']:.2f}",
    )
    console.print(table)
    if out:
        atomic_write_json(out, result)
        console.print(f"result written to {out}")
    return result


@app.command("strategies")
def strategies() -> None:
    """List the registered strategies and their config fields."""
    from adaptlab.strategies import get_strategy, list_strategies

    table = Table(title="strategies")
    for col in ("name", "kind", "what", "config fields"):
        table.add_column(col)
    for name in list_strategies():
        spec = get_strategy(name)
        fields = ", ".join(f.name for f in dataclasses.fields(spec.config_cls))
        table.add_row(name, spec.kind, spec.summary, fields)
    console.print(table)


def _parse_overrides(items: list[str]) -> dict:
    """``key=value`` pairs; values are JSON when they parse (numbers, lists), else strings."""
    out = {}
    for item in items:
        if "=" not in item:
            raise DataError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


DEVICE_OPT = typer.Option("auto", help="auto (a GPU when torch sees one), cpu, cuda, cuda:N.")


def _endpoint_spec(
    endpoint: str,
    endpoints_file: Path | None,
    endpoint_model: str = "default",
    api_key_env: str | None = None,
    endpoint_mode: str = "auto",
    flag: str = "--endpoint",
):
    """``--endpoint``: a base URL (with --endpoint-model etc.), ``NAME=URL,model=..,key=..``, or a NAME
    defined in ``--endpoints FILE``."""
    from adaptlab.backends.endpoints import EndpointError, EndpointSpec, gather_endpoints, parse_endpoint_flag

    if endpoint.startswith(("http://", "https://")):
        return EndpointSpec(
            name="endpoint", url=endpoint, model=endpoint_model, api_key_env=api_key_env, mode=endpoint_mode
        )
    if "=" in endpoint:
        return parse_endpoint_flag(endpoint)
    known = {s.name: s for s in gather_endpoints(None, endpoints_file)} if endpoints_file else {}
    if endpoint not in known:
        raise EndpointError(
            f"{flag} {endpoint!r}: not a URL, NAME=URL, or a name in --endpoints"
            + (f" (it defines {', '.join(known)})" if known else "")
        )
    return known[endpoint]


def _cache_path(response_cache: Path | None, off: bool) -> Path | None:
    """The endpoint response cache's file: the option, else $ADAPTLAB_RESPONSE_CACHE or the default; None when off."""
    from adaptlab.backends.endpoints import default_cache_path

    return None if off else (response_cache or default_cache_path())


def _cache_file(response_cache: Path | None, off: bool, needed) -> str | None:
    """A compare's response cache file, as its config keeps it: None without endpoints or when off
    (``str(None)`` once made a cache file named "None" in the working directory)."""
    path = _cache_path(response_cache, off) if needed else None
    return str(path) if path is not None else None


def _print_spend(backend) -> None:
    """What a backend's endpoint calls cost (nothing for the local model)."""
    if getattr(backend, "endpoint_spec", None) is None:
        return
    from adaptlab.backends.endpoints import spend

    paid = spend(backend.endpoint_spec, backend)
    console.print(
        f"endpoint {paid['endpoint']}: {paid['calls']:,} calls, {paid['http_requests']:,} HTTP requests, "
        f"{paid['cache_hits']:,} answered from the cache; {paid['prompt_tokens']:,} prompt + "
        f"{paid['completion_tokens']:,} completion tokens = ${paid['cost_usd']:.4f}",
        highlight=False,
    )


def _open_proposer(strategy_spec, flag: str | None, endpoints_file: Path | None, response_cache: Path | None) -> dict:
    """``train --proposer``: open (pre-flight, register by name) the endpoint it names; the config
    override naming it ({} without the flag)."""
    if not flag:
        return {}
    if "proposer" not in {f.name for f in dataclasses.fields(strategy_spec.config_cls)}:
        raise DataError(f"--proposer: {strategy_spec.name} asks no proposer LM (gepa does)")
    if flag == "self":
        return {"proposer": flag}
    from adaptlab.backends.endpoints import ResponseCache, preflight, register_open

    spec = _endpoint_spec(flag, endpoints_file, flag="--proposer")
    backend = spec.backend(ResponseCache(response_cache) if response_cache else None)
    preflight(spec, backend)
    register_open(spec, backend)
    return {"proposer": spec.name}


def _backend(
    model: str,
    endpoint: str | None,
    endpoint_model: str,
    api_key_env: str | None,
    endpoint_mode: str,
    device: str = "auto",
    endpoints_file: Path | None = None,
    response_cache: Path | None = None,
):
    """The local model, or an OpenAI-compatible endpoint for API-only models (checked before use:
    :func:`adaptlab.backends.endpoints.preflight`; answers cached in ``response_cache``)."""
    if endpoint:
        from adaptlab.backends.endpoints import ResponseCache, preflight

        spec = _endpoint_spec(endpoint, endpoints_file, endpoint_model, api_key_env, endpoint_mode)
        backend = spec.backend(ResponseCache(response_cache) if response_cache else None)
        info = preflight(spec, backend)
        console.print(
            f"endpoint {spec.name} ({spec.url}, model {spec.model}): reachable, "
            f"{'label log-probabilities offered' if info['logprobs'] else 'no log-probabilities: answers parsed'}",
            highlight=False,
        )
        backend.endpoint_spec = spec
        return backend
    from adaptlab.backends import LocalBackend
    from adaptlab.models.base import load_base, resolve_device

    with console.status(f"loading {model}"):
        return LocalBackend(load_base(model, device=resolve_device(device)))


def _ranking_metrics() -> list[str]:
    """Every task type's ranking metric (a registry entry's is the first its metrics hold)."""
    from adaptlab.tasks import get_task, list_tasks

    return list(dict.fromkeys(get_task(t).metric for t in list_tasks()))


def _file_defaults(ctx: typer.Context, param, value: Path | None):
    """``--config FILE`` of train and serve: the YAML (or JSON) file's keys become the command's option
    values, and options given on the command line override them (click's ``default_map``, filled by
    this eager option before the others are read). Keys are the options' names (``batch_size`` or
    ``batch-size``); ``settings: {r: 16}`` is ``--set r=16``. An unknown key is one line naming the
    file and the key."""
    if value is None or ctx.resilient_parsing:
        return value
    from adaptlab.compare.config import read_config_file

    try:
        raw = read_config_file(value)
    except ValueError as e:
        _fail(e)
    names = {p.name for p in ctx.command.params if p.name != "config"}
    found: dict = {}
    for key, v in raw.items():
        name = str(key).replace("-", "_")
        if name in ("settings", "set") and "set_" in names:
            if not isinstance(v, dict):
                _fail(ValueError(f"{value}: key '{key}': expected a mapping of setting: value (e.g. r: 16)"))
            name, v = "set_", [f"{k}={json.dumps(x)}" for k, x in v.items()]
        if name not in names:
            known = sorted(n.rstrip("_") for n in names)
            _fail(ValueError(f"{value}: unknown key '{key}'; known: {', '.join(known)}"))
        found[name] = str(v) if isinstance(v, Path) else v
    ctx.default_map = {**(ctx.default_map or {}), **found}
    return value


def _save_options(out: Path, params: dict) -> None:
    """The options a train ran with as ``OUT/train.yaml``: ``adaptlab train --config OUT/train.yaml``
    runs it again unchanged."""
    import yaml

    from adaptlab.utils import atomic_write_text

    opts = {k.rstrip("_"): str(v) if isinstance(v, Path) else v for k, v in params.items() if k != "config"}
    opts["settings"] = _parse_overrides(opts.pop("set") or [])
    atomic_write_text(out / "train.yaml", yaml.safe_dump(opts, sort_keys=False))


def _config_opt(what: str):
    return typer.Option(
        None,
        "--config",
        is_eager=True,
        callback=_file_defaults,
        help=f"A YAML file of {what} options (keys: the options' names; settings: {{key: value}} for --set); "
        f"options given on the command line override it.",
    )


def _field_opt(cls, name: str, *flags: str):
    """An option whose default and help are the config class's field's, written once there (a field
    without a default is a required option)."""
    default = default_of(cls, name)
    return typer.Option(... if default is dataclasses.MISSING else default, *flags, help=help_of(cls, name))


def config_options(cls):
    """Decorator: the command gets one option per field of the config class ``cls`` whose metadata
    has ``cli`` (True, or the option's flags), with the field's type, default and help, written once
    in ``cls`` (vLLM's ``engine/arg_utils.py`` derives its engine arguments from its config
    dataclasses the same way). The command receives them in its ``**settings``; typer reads the
    command's ``__signature__``. By hand because typer builds options from a function's signature
    only."""
    import inspect
    import typing

    hints = typing.get_type_hints(cls)
    derived = []
    for name, spec in cli_fields(cls).items():
        option = _field_opt(cls, name, *(spec if isinstance(spec, tuple) else ()))
        derived.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=hints[name]))

    def decorate(fn):
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        clash = {p.name for p in own} & {p.name for p in derived}
        if clash:
            raise TypeError(f"{fn.__name__}: {', '.join(sorted(clash))} given twice (its own and {cls.__name__}'s)")
        fn.__signature__ = sig.replace(parameters=own + derived)
        return fn

    return decorate


def cli_fields(cls) -> dict:
    """The fields of ``cls`` that :func:`config_options` makes options: name -> their ``cli`` mark
    (True, or the option's flags)."""
    return {f.name: f.metadata["cli"] for f in dataclasses.fields(cls) if f.metadata.get("cli")}


# train_cmd's longer options, here so that its signature reads as a list of names
_TRAIN_OPTS = {
    "endpoint": typer.Option(
        None,
        help="Prompt strategies: an OpenAI-compatible base URL "
        "(e.g. http://127.0.0.1:8000/v1) instead of the local model, "
        "or NAME=URL,model=M,key=ENV,in=PRICE,out=PRICE,concurrency=N, "
        "or a NAME from --endpoints.",
    ),
    "endpoints_file": typer.Option(
        None,
        "--endpoints",
        help="TOML file of [endpoints.NAME] tables (url, model, api_key_env, price_in, price_out, concurrency).",
    ),
    "response_cache": typer.Option(
        None,
        "--response-cache",
        help="SQLite file of endpoint answers already paid for (greedy or "
        "seeded requests; default $ADAPTLAB_RESPONSE_CACHE or "
        "~/.cache/adaptlab/responses.sqlite).",
    ),
    "track": typer.Option(
        None, help="tensorboard: write loss, learning rate and dev metric per step to OUT/tensorboard."
    ),
    "proposer": typer.Option(
        None,
        help="gepa: the LM that proposes instructions, an endpoint "
        "NAME=URL[,model=..,key=..,in=..,out=..], a NAME from "
        "--endpoints, or 'self' (the model being prompted).",
    ),
}


@app.command("train")
@config_options(TrainConfig)
def train_cmd(
    ctx: typer.Context,
    strategy: str = typer.Option(..., help="Any registered strategy (see `adaptlab strategies`)."),
    data: str = typer.Option("demo", help="Dataset name, folder of split files, or a single file."),
    columns: str | None = typer.Option(None, help=COLUMNS_HELP),
    out: Path = typer.Option(..., help="Artifact folder to write."),
    model: str = typer.Option(DEFAULT_MODEL, help=MODEL_HELP),
    set_: list[str] = typer.Option([], "--set", help="Strategy config override key=value (repeatable), e.g. r=16."),
    train_size: int | None = typer.Option(None, help="Use a stratified sample of this many train examples."),
    seed: int = typer.Option(0, help="Seed for splits, batch order and initialisation."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in OUT/run after a kill."),
    data_dir: Path | None = typer.Option(None, help="Folder of named datasets."),
    endpoint: str | None = _TRAIN_OPTS["endpoint"],
    endpoint_model: str = typer.Option("default", help="The `model` field sent to the endpoint."),
    api_key_env: str | None = typer.Option(None, help="Environment variable holding the endpoint's API key."),
    endpoint_mode: str = typer.Option("auto", help="auto | logprobs (echoed label logprobs) | parse (parse answers)."),
    endpoints_file: Path | None = _TRAIN_OPTS["endpoints_file"],
    response_cache: Path | None = _TRAIN_OPTS["response_cache"],
    no_response_cache: bool = typer.Option(False, "--no-response-cache", help="Send every endpoint request."),
    device: str = DEVICE_OPT,
    track: str | None = _TRAIN_OPTS["track"],
    proposer: str | None = _TRAIN_OPTS["proposer"],
    config: Path | None = _config_opt("train"),
    **training,  # TrainConfig's options (config_options)
) -> None:
    """Fit one strategy (train a gradient one, search a prompt one), evaluate on the test split, save the artifact."""
    from adaptlab import api
    from adaptlab.backends import BackendError
    from adaptlab.strategies import get_strategy
    from adaptlab.training.distributed import is_main
    from adaptlab.utils import set_torch_threads

    set_torch_threads()
    try:
        spec = get_strategy(strategy)
        settings = {
            **_parse_overrides(set_),
            **_open_proposer(spec, proposer, endpoints_file, _cache_path(response_cache, no_response_cache)),
        }
        if track not in (None, "tensorboard"):
            raise DataError(f"--track {track!r}: train writes tensorboard (compare: --track mlflow)")
        if endpoint and spec.kind != "prompt":
            raise DataError(f"--endpoint: {strategy} changes weights; only prompt strategies run on an endpoint")
        mapping = parse_columns(columns)
        backend = _backend(
            model,
            endpoint,
            endpoint_model,
            api_key_env,
            endpoint_mode,
            device,
            endpoints_file,
            _cache_path(response_cache, no_response_cache),
        )
        art = api.train(
            strategy,
            data,
            out=out,
            backend=backend,
            settings=settings,
            train_size=train_size,
            seed=seed,
            resume=resume,
            data_dir=data_dir,
            columns=mapping,
            **training,
        )
        if not is_main():  # under torchrun: rank 0 evaluates and saves; the others are done
            return
        _save_options(out, ctx.params)
        if track is not None:
            from adaptlab.tracking import tensorboard_from_log

            steps = tensorboard_from_log(out / "run", out / "tensorboard")
            console.print(f"tensorboard: {steps} steps in {out / 'tensorboard'} (tensorboard --logdir {out})")
    except (*EXPECTED_ERRORS, ValueError, BackendError) as e:
        _fail(e)
    _print_spend(backend)
    _print_trained(art, f"{strategy} on {data}", out)


def _print_trained(art, title: str, out: Path) -> None:
    """``train``'s one table: test metrics, cost and size of the artifact just written."""
    from adaptlab.strategies.base import artifact_bytes

    te, tr = art.metrics["test"], art.metrics["train"]
    table = Table(title=title)
    columns = {f"test {k}": f"{te[k]:.3f}" for k in art.spec.report_metrics if isinstance(te.get(k), (int, float))}
    columns |= {
        "prompt tokens": f"{te['prompt_tokens']:.0f}",
        "test ex/s": f"{te['examples_per_s']:.1f}",
        "fit s": f"{tr['train_seconds']:.1f}",
        "peak RSS GB": f"{tr['peak_rss_bytes'] / 2**30:.2f}",
        "trainable": f"{tr['trainable_params']:,}",
        "model calls": "-" if tr.get("model_calls") is None else f"{tr['model_calls']:,}",
        "artifact MB": f"{artifact_bytes(out) / 1e6:.3f}",
    }
    if tr.get("proposer"):
        columns["proposer calls / tokens"] = f"{tr['proposer']['calls']:,} / {tr['proposer']['tokens']:,}"
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in columns.items():
        table.add_row(k, v)
    console.print(table)
    console.print(f"artifact written to {out}")


@app.command("endpoints")
def endpoints_cmd(
    endpoint: list[str] = typer.Option(
        [], "--endpoint", help="NAME=URL[,model=M,key=ENV,in=PRICE,out=PRICE,concurrency=N] (repeatable)."
    ),
    endpoints_file: Path | None = typer.Option(None, "--endpoints", help="TOML file of [endpoints.NAME] tables."),
) -> None:
    """Check endpoints before spending on them: reachable, key accepted, model served, log-probabilities offered."""
    from adaptlab.backends import BackendError
    from adaptlab.backends.endpoints import gather_endpoints, preflight

    try:
        specs = gather_endpoints(endpoint, endpoints_file)
        if not specs:
            raise DataError("no endpoint given: pass --endpoint NAME=URL or --endpoints FILE")
        table = Table(title="endpoints")
        for col in ("name", "url", "model", "label log-probs", "$ / 1M in", "$ / 1M out", "concurrency"):
            table.add_column(col)
        for spec in specs:
            info = preflight(spec)
            table.add_row(
                spec.name,
                spec.url,
                spec.model,
                "yes" if info["logprobs"] else "no (answers parsed)",
                f"{spec.price_in:g}",
                f"{spec.price_out:g}",
                str(spec.concurrency),
            )
    except (DataError, ValueError, BackendError) as e:
        _fail(e)
    console.print(table)


# compare's options that say how to run a compare, not what it compares: the only ones --config takes.

RUN_OPTIONS = {"config", "out", "workers", "ray", "ray_cpus", "no_progress", "track", "tracking_uri"}


# compare_cmd's longer options, here so that its signature reads as a list of names
_COMPARE_OPTS = {
    "data": typer.Option(None, help=help_of(CompareConfig, "data").rstrip(".") + "; required unless --config."),
    "train_sizes": typer.Option(
        ",".join(map(str, default_of(CompareConfig, "train_sizes"))), help=help_of(CompareConfig, "train_sizes")
    ),
    "budget": typer.Option(
        None,
        help="Cap for the whole compare, e.g. 30m or 2h: runs that will not "
        "fit are skipped and listed. With a budget the compare is "
        "adaptive unless --full-grid.",
    ),
    "adaptive": typer.Option(None, "--adaptive/--full-grid", help=help_of(CompareConfig, "adaptive")),
    "tune": typer.Option(None, "--tune/--no-tune", help=help_of(CompareConfig, "tune")),
    "set_": typer.Option(
        [],
        "--set",
        help="strategy.key=value, e.g. lora.r=16, few_shot.k=8, prompt_search.budget_calls=300, full.epochs=1.",
    ),
    "workers": typer.Option(
        1,
        help="Worker processes sharing this machine's cores and the run folder "
        "(several machines: start the same command on each, --out on shared "
        "storage).",
    ),
    "ray": typer.Option(
        None,
        "--ray",
        help="Place the --workers with Ray: a cluster address, or 'local' (--out must be storage every node sees).",
    ),
    "ray_cpus": typer.Option(
        None, "--ray-cpus", help="CPUs per Ray worker (default: this machine's cores / --workers)."
    ),
    "track": typer.Option(
        None,
        help="mlflow: log every run, the report and the recommendation to "
        "MLflow (a store in OUT/mlflow unless --tracking-uri).",
    ),
    "endpoint": typer.Option(
        [],
        "--endpoint",
        help="A hosted candidate, repeatable: NAME=URL[,model=M,"
        "key=ENV,in=$/1M input tokens,out=$/1M output tokens,"
        "concurrency=N]. Every prompt strategy also runs there "
        "as STRATEGY@NAME, on the same test rows.",
    ),
    "endpoints_file": typer.Option(
        None, "--endpoints", help="TOML file of [endpoints.NAME] tables (the same fields), all of them candidates."
    ),
    "volume": typer.Option(None, help=help_of(CompareConfig, "volume")),
    "response_cache": typer.Option(None, "--response-cache", help=help_of(CompareConfig, "response_cache")),
    "config": typer.Option(
        None,
        "--config",
        help="A YAML file of compare settings (see "
        "docs/how-to/config.md), or a run folder's saved "
        "compare.json to re-run it unchanged; options given "
        "on the command line and --set override it.",
    ),
}


@app.command("compare")
@config_options(CompareConfig)
def compare_cmd(
    ctx: typer.Context,
    data: str | None = _COMPARE_OPTS["data"],
    columns: str | None = typer.Option(None, help=COLUMNS_HELP),
    model: str = typer.Option(DEFAULT_MODEL, help=MODELS_HELP),
    strategies: str = typer.Option("all", help=help_of(CompareConfig, "strategies")),
    train_sizes: str = _COMPARE_OPTS["train_sizes"],
    budget: str | None = _COMPARE_OPTS["budget"],
    adaptive: bool | None = _COMPARE_OPTS["adaptive"],
    tune: bool | None = _COMPARE_OPTS["tune"],
    out: Path = typer.Option(..., help="Run folder (results/, artifacts/, report/); re-running resumes."),
    set_: list[str] = _COMPARE_OPTS["set_"],
    data_dir: Path | None = typer.Option(None, help=help_of(CompareConfig, "data_dir")),
    workers: int = _COMPARE_OPTS["workers"],
    ray: str | None = _COMPARE_OPTS["ray"],
    ray_cpus: int | None = _COMPARE_OPTS["ray_cpus"],
    no_progress: bool = typer.Option(False, "--no-progress", help="No per-step progress bars."),
    track: str | None = _COMPARE_OPTS["track"],
    tracking_uri: str | None = typer.Option(None, help="An MLflow tracking URI (a server, or sqlite:///path)."),
    device: str = DEVICE_OPT,
    endpoint: list[str] = _COMPARE_OPTS["endpoint"],
    endpoints_file: Path | None = _COMPARE_OPTS["endpoints_file"],
    volume: str | None = _COMPARE_OPTS["volume"],
    response_cache: Path | None = _COMPARE_OPTS["response_cache"],
    no_response_cache: bool = typer.Option(False, "--no-response-cache", help="Send every endpoint request."),
    proposer: str | None = typer.Option(None, help=PROPOSER_HELP),
    config: Path | None = _COMPARE_OPTS["config"],
    **settings,  # CompareConfig's options (config_options), read through ctx.params
) -> None:
    """Run every strategy on your data, measure them side by side, write a report and a recommendation."""
    from adaptlab.backends import BackendError
    from adaptlab.utils import set_torch_threads

    set_torch_threads()
    try:
        cfg = _saved_config(ctx, config) if config is not None else _flag_config(ctx.params)
    except (*EXPECTED_ERRORS, ValueError, BackendError) as e:
        _fail(e)
    _compare_and_report(cfg, out, workers, ray, ray_cpus, no_progress, track, tracking_uri)


def _saved_config(ctx: typer.Context, path: Path):
    """``--config FILE`` (YAML or a run folder's compare.json): its settings, then the options given on
    the command line and ``--set`` over them; one-line errors name the file and the key."""
    from adaptlab.compare.config import from_mapping, read_config_file

    raw = read_config_file(path)
    given = [
        name
        for name in ctx.params
        if name not in RUN_OPTIONS
        and getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")
    ]
    for name in given:
        value = ctx.params[name]
        if name in FILE_ONLY:
            raise DataError(
                f"--config {path}: give {FILE_ONLY[name]} in the file (key '{name}'), not as "
                f"--{name.replace('_', '-').rstrip('-')}"
            )
        if name == "set_":
            raw["set"] = {**(raw.get("set") or {}), **_parse_overrides(value)}
        elif name == "columns":
            raw["columns"] = parse_columns(value) or {}
        elif name == "data_dir":
            raw["data_dir"] = str(value)
        else:
            raw[name] = value
    return from_mapping(raw, str(path))


# compare options a --config file must hold itself (endpoints are tables, not one flag's text).
FILE_ONLY = {
    "endpoint": "the endpoints",
    "endpoints_file": "the endpoints",
    "proposer": "the proposer",
    "response_cache": "the response cache",
    "no_response_cache": "the response cache",
}


def _flag_config(p: dict):
    """The compare's settings from its command-line options (``p``: compare's parameters by name)."""
    from adaptlab.compare import CompareConfig, parse_budget
    from adaptlab.compare.config import parse_sizes, parse_volume

    if p["data"] is None:
        raise DataError("--data: required (or --config FILE, a compare's saved settings)")
    names, hosted, proposer_name, proposer_only = _candidates(
        p["strategies"], p["endpoint"], p["endpoints_file"], p["proposer"]
    )
    settings, strategy_epochs = _strategy_overrides(p["set_"])
    adaptive = p["adaptive"] if p["adaptive"] is not None else p["budget"] is not None
    same = ("model", "device", *cli_fields(CompareConfig))  # passed through as given
    return CompareConfig(
        data=p["data"],
        strategies=names,
        train_sizes=parse_sizes(p["train_sizes"]),
        budget_seconds=parse_budget(p["budget"]),
        strategy_epochs=strategy_epochs,
        strategy_settings=settings,
        data_dir=str(p["data_dir"]) if p["data_dir"] else None,
        columns=parse_columns(p["columns"]) or {},
        adaptive=adaptive,
        tune=p["tune"] if p["tune"] is not None else adaptive,
        endpoints=hosted,
        volume=parse_volume(p["volume"]),
        response_cache=_cache_file(p["response_cache"], p["no_response_cache"], hosted or proposer_only),
        proposer=proposer_name,
        proposer_endpoints=proposer_only,
        **{k: p[k] for k in same},
    )


def _compare_and_report(
    cfg,
    out: Path,
    workers: int,
    ray: str | None,
    ray_cpus: int | None,
    no_progress: bool,
    track: str | None,
    tracking_uri: str | None,
) -> None:
    """Run (or resume) the compare ``cfg`` in ``out`` (:func:`adaptlab.compare.session.run`, what
    ``adaptlab.compare()`` runs too), then print the answer."""
    from adaptlab.backends import BackendError
    from adaptlab.compare import session

    try:
        result = session.run(cfg, out, progress=not no_progress, workers=workers, ray=ray, ray_cpus=ray_cpus)
        tracked = _track_compare(out, track, tracking_uri)
    except (*EXPECTED_ERRORS, ValueError, BackendError) as e:
        _fail(e)
    _compare_done(result, tracked)


def _candidates(strategies: str, endpoint: list[str], endpoints_file: Path | None, proposer: str | None):
    """``--strategies`` (with gepa when ``all`` and a --proposer), the hosted candidates
    STRATEGY@ENDPOINT added, the endpoints, and the proposer's name and endpoint of its own."""
    from adaptlab.strategies import list_strategies

    names = (
        list_strategies(default=True) + (["gepa"] if proposer else [])
        if strategies == "all"
        else [s.strip() for s in strategies.split(",") if s.strip()]
    )
    hosted = _hosted_candidates(names, endpoint, endpoints_file)  # adds STRATEGY@ENDPOINT to names
    return (names, hosted, *_proposer(proposer, hosted))


def _compare_done(result, tracked: dict | None) -> None:
    if tracked:
        console.print(
            f"tracked in MLflow: {tracked['new_runs']} new of {tracked['runs']} runs, experiment "
            f"'{tracked['experiment']}' at {tracked['uri']} (mlflow ui --backend-store-uri {tracked['uri']})"
        )
    if result.skipped:
        console.print(f"[yellow]{len(result.skipped)} run(s) skipped by the budget[/] (listed in the report)")
    console.rule("recommendation")
    console.print(result.recommendation.to_markdown(), highlight=False, soft_wrap=True)
    console.print(f"report: {result.report_html} and {result.report_md}")


def _hosted_candidates(names: list[str], flags: list[str], file: Path | None) -> list[dict]:
    """The endpoints (as dicts for the compare's config); a STRATEGY@NAME candidate for every prompt
    strategy among ``names`` on each of them is appended to ``names``."""

    from adaptlab.backends.endpoints import gather_endpoints
    from adaptlab.strategies import get_strategy

    specs = gather_endpoints(flags, file)
    prompt = [n for n in names if "@" not in n and get_strategy(n).kind == "prompt"]
    if specs and not prompt and not any("@" in n for n in names):
        raise DataError("--endpoint: no prompt strategy among --strategies to run there (e.g. zero_shot, few_shot)")
    names += [c for c in (f"{n}@{s.name}" for s in specs for n in prompt) if c not in names]
    return [dataclasses.asdict(s) for s in specs]


def _proposer(flag: str | None, hosted: list[dict]) -> tuple[str | None, list[dict]]:
    """``--proposer``: (its name, [its endpoint] when the flag defines one that is not a candidate)."""
    from adaptlab.backends.endpoints import parse_endpoint_flag

    if not flag or "=" not in flag:
        return flag, []
    spec = parse_endpoint_flag(flag)
    if spec.name in {e["name"] for e in hosted}:
        raise DataError(f"--proposer {spec.name}: already an endpoint of this compare; pass just its name")
    return spec.name, [dataclasses.asdict(spec)]


def _track_compare(out: Path, track: str | None, tracking_uri: str | None) -> dict | None:
    if track is None:
        if tracking_uri:
            raise DataError("--tracking-uri needs --track mlflow")
        return None
    from adaptlab.tracking import TRACKERS, track_compare

    if track not in TRACKERS:
        raise DataError(f"--track {track!r}: compare tracks to {', '.join(TRACKERS)} (train: --track tensorboard)")
    return track_compare(out, tracking_uri)


def _strategy_overrides(set_: list[str]) -> tuple[dict, dict]:
    """``--set strategy.key=value`` -> (settings per strategy, epochs per strategy), each strategy's
    settings checked against its config now rather than at run 7 ("lr" goes to the training config)."""
    from adaptlab.strategies.registry import make_config, split_lr

    settings: dict = {}
    strategy_epochs: dict = {}
    for key, value in _parse_overrides(set_).items():
        if "." not in key:
            raise DataError(f"--set {key}: use strategy.key=value, e.g. lora.r=16")
        strat, field_name = key.split(".", 1)
        if field_name == "epochs":
            strategy_epochs[strat] = float(value)
        else:
            settings.setdefault(strat, {})[field_name] = value
    for strat, kw in settings.items():
        make_config(strat, **split_lr(strat, kw)[0])
    return settings, strategy_epochs


def _print_recommendation(run_dir: Path, c) -> None:
    from adaptlab.compare import load_results
    from adaptlab.compare.recommend import recommend

    rec = recommend(load_results(run_dir), c)
    console.rule("recommendation")
    console.print(rec.to_markdown(), highlight=False, soft_wrap=True)


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="A compare run folder.")) -> None:
    """Rebuild the report (markdown, HTML, plots) from the stored run results alone."""
    from adaptlab.compare.recommend import Constraints
    from adaptlab.compare.report import build_report

    try:
        out = build_report(run_dir, Constraints(prompt_margin=_saved_margin(run_dir)))
    except (ValueError, OSError) as e:
        _fail(e)
    console.print(f"report: {out / 'report.html'} and {out / 'report.md'}")


@app.command("recommend")
def recommend_cmd(
    run_dir: Path = typer.Argument(..., help="A compare run folder."),
    max_train_minutes: float | None = typer.Option(None, help="Exclude strategies that trained longer."),
    max_memory: float | None = typer.Option(None, help="Exclude strategies whose peak RSS exceeded this (GB)."),
    tasks: int = typer.Option(1, help="How many tasks you will serve from one base model."),
    weights_accessible: str = typer.Option("yes", help="no: API-only model, prompts only."),
    min_quality: float | None = typer.Option(None, help="Exclude strategies below this accuracy / ROUGE-L."),
) -> None:
    """A ranked recommendation with reasons, under your constraints, from a finished comparison."""
    from adaptlab.compare.recommend import Constraints

    if weights_accessible not in ("yes", "no"):
        _fail(DataError(f"--weights-accessible {weights_accessible!r}: yes or no"))
    if not (Path(run_dir) / "results").is_dir():
        _fail(DataError(f"{run_dir}: not a compare run folder (no results/)"))
    _print_recommendation(
        run_dir,
        Constraints(
            max_train_minutes,
            max_memory,
            tasks,
            weights_accessible == "yes",
            min_quality,
            prompt_margin=_saved_margin(run_dir),
        ),
    )


def _saved_margin(run_dir: Path) -> float:
    """The --prompt-margin a compare folder was run with (its compare.json), else the default."""
    from adaptlab.compare.recommend import PROMPT_MARGIN

    try:
        return float(json.loads((Path(run_dir) / "compare.json").read_text()).get("prompt_margin", PROMPT_MARGIN))
    except (OSError, ValueError, TypeError):
        return PROMPT_MARGIN


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where to write the comparison (resumable)."),
    model: str = typer.Option(DEFAULT_MODEL, help=MODEL_HELP),
    budget: str = typer.Option("15m", help="Budget for the comparison (it stops sooner once the winner is decided)."),
) -> None:
    """The main job on the embedded demo task: check the data, then compare strategies on a quick budget.

    Prompt strategies (zero-shot, few-shot, prompt search) against trained ones (soft prompt,
    prefix, LoRA), raced on their learning curves up to all the demo's training data: each strategy
    runs once, the leader is measured on all the data, and a strategy is dropped once its
    optimistic prediction falls below the leader's pessimistic one. Prints the decided
    recommendation (or what was still open when the budget ran out) and where the report is.
    """
    console.rule("[bold]adaptlab demo: Fernhill Home support intents")
    data_check(
        "demo",
        eval_files=[],
        task=None,
        text_field=None,
        label_field=None,
        columns=None,
        labels=None,
        tokenizer=model,
        max_tokens=512,
        data_dir=None,
        redact=None,
    )
    console.rule(f"compare: every strategy on the demo task, budget {budget}")
    # One epoch for LoRA: at 360 tickets its dev accuracy after the first of two epochs was 0.984
    # (1.000 after the second), at half the time. 128 between 32 and 360 gives the challengers a
    # second point short of the target, where most of them are dropped.
    from adaptlab.compare import CompareConfig, parse_budget

    try:
        settings, strategy_epochs = _strategy_overrides(
            ["few_shot.k=8", "prompt_search.budget_calls=120", "lora.epochs=1"]
        )
        # Every other setting is CompareConfig's default; tune=False: 12 variants would take most of the
        # few minutes the demo has (`compare --tune` does it).
        cfg = CompareConfig(
            data="demo",
            model=model,
            strategies=["zero_shot", "few_shot", "prompt_search", "soft_prompt", "prefix", "lora"],
            train_sizes=[32, 128, "all"],
            budget_seconds=parse_budget(budget),
            test_limit=120,
            fragility_k=1,
            fragility_examples=16,
            strategy_settings=settings,
            strategy_epochs=strategy_epochs,
            adaptive=True,
            tune=False,
        )
    except (*EXPECTED_ERRORS, ValueError) as e:
        _fail(e)
    _compare_and_report(cfg, out, workers=1, ray=None, ray_cpus=None, no_progress=False, track=None, tracking_uri=None)


@app.command("export")
@config_options(ExportConfig)
def export_cmd(
    artifact: Path = typer.Argument(..., help="An artifact folder (or a registered one: TASK[@VERSION|@ALIAS])."),
    out: Path = typer.Option(..., help="Folder to write."),
    registry: Path | None = typer.Option(None, "--registry", help="Registry for TASK@... names."),
    **settings,  # ExportConfig's options (config_options)
) -> None:
    """Export an artifact for other engines (PEFT, vLLM, plain transformers, llama.cpp and Ollama)."""
    from adaptlab.api import export_as
    from adaptlab.export import ExportError
    from adaptlab.models.base import load_base

    try:
        cfg = ExportConfig(**settings)
        folder = artifact
        if not artifact.exists():  # a registry name
            folder = _registry(registry, read_only=False).resolve(str(artifact)).path
        written = export_as(folder, out, cfg, load_base(cfg.model) if cfg.needs_base else None)
    except (ExportError, *_registry_errors()) as e:
        _fail(e)
    console.print(f"exported {artifact} as {cfg.format} to {written}")


# ------------------------------------------------------------------ registry, keys, feedback, serve
REGISTRY_OPT = typer.Option(
    None, "--registry", help="Registry folder (default: $ADAPTLAB_REGISTRY or ~/.cache/adaptlab/registry)."
)


def _registry(path: Path | None, read_only: bool = False):
    from adaptlab.registry import Registry, RegistryError

    try:
        return Registry(path, read_only=read_only)
    except RegistryError as e:
        _fail(e)


def _registry_errors():
    from adaptlab.registry import RegistryError

    return EXPECTED_ERRORS + (RegistryError,)


@registry_app.command("register")
def registry_register(
    folder: Path = typer.Argument(
        ...,
        help="An artifact folder written by `adaptlab train` or `compare`, or a compare's run folder "
        "(its recommended run's artifact).",
    ),
    task: str = typer.Option(..., help="Task name (a-z 0-9 _ . -); versions count up per task."),
    alias: str | None = typer.Option(None, help="Also point this alias (e.g. staging, prod) at it."),
    run: str | None = typer.Option(None, help="The compare run it came from (recorded)."),
    note: str | None = typer.Option(None, help="Free text kept with the version."),
    registry: Path | None = REGISTRY_OPT,
) -> None:
    """Copy an artifact into the registry as the task's next version."""
    try:
        if (folder / "compare.json").is_file():  # a compare folder: the run it recommends
            from adaptlab.compare.session import CompareResult

            folder = CompareResult.open(folder).artifact  # the registry records the compare it came from
            console.print(f"the compare recommends {folder.name}", highlight=False)
        e = _registry(registry).register(folder, task, run=run, note=note, alias=alias)
    except _registry_errors() as err:
        _fail(err)
    console.print(
        f"registered [bold]{e.ref}[/] ({e.strategy}, {e.bytes / 1e6:.2f} MB, digest {e.digest[:12]})"
        + (f", {alias} -> {e.version}" if alias else "")
    )


@registry_app.command("list")
def registry_list(
    task: str | None = typer.Option(None, help="Only this task."), registry: Path | None = REGISTRY_OPT
) -> None:
    """Every live version with its aliases and headline metric."""
    try:
        reg = _registry(registry, read_only=False)
        entries, aliases = reg.entries(task), reg.aliases()
    except _registry_errors() as err:
        _fail(err)
    from adaptlab.registry import lineage_text

    table = Table(title=f"registry {reg.root}")
    for col in ("model", "strategy", "aliases", "metric", "MB", "created", "by", "run", "made from"):
        table.add_column(col)
    lineages = {t: reg.lineage(t) for t in {e.task for e in entries}}
    for e in entries:
        held = ", ".join(a for a, v in aliases.get(e.task, {}).items() if v == e.version)
        test = e.metrics.get("test") or e.metrics.get("dev") or e.metrics
        metric = next((f"{k} {test[k]:.3f}" for k in _ranking_metrics() if isinstance(test.get(k), float)), "-")
        table.add_row(
            e.ref,
            e.strategy,
            held or "-",
            metric,
            f"{e.bytes / 1e6:.2f}",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created_at)),
            e.created_by,
            e.run or "-",
            lineage_text(lineages[e.task].get(e.version)),
        )
    console.print(table)


@registry_app.command("show")
def registry_show(
    ref: str = typer.Argument(..., help="TASK, TASK@VERSION or TASK@ALIAS."), registry: Path | None = REGISTRY_OPT
) -> None:
    """One version in full (JSON), with the alias history of its task."""
    import dataclasses as dc

    try:
        reg = _registry(registry)
        e = reg.resolve(ref)
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in dc.asdict(e).items()}
        out["aliases"] = reg.aliases(e.task).get(e.task, {})
        out["alias_history"] = reg.history(e.task)
        out["lineage"] = reg.lineage(e.task).get(e.version)
    except _registry_errors() as err:
        _fail(err)
    console.print_json(json.dumps(out))


@registry_app.command("promote")
def registry_promote(
    task: str = typer.Argument(...),
    version: int = typer.Argument(...),
    alias: str = typer.Option("prod", help="Alias to point at the version."),
    registry: Path | None = REGISTRY_OPT,
) -> None:
    """Point an alias (default prod) at a version; running servers follow at their next request."""
    try:
        e = _registry(registry).promote(task, version, alias)
    except _registry_errors() as err:
        _fail(err)
    console.print(f"{task}@{alias} -> {e.ref}")


@registry_app.command("rollback")
def registry_rollback(
    task: str = typer.Argument(...),
    alias: str = typer.Option("prod", help="Alias to move back."),
    registry: Path | None = REGISTRY_OPT,
) -> None:
    """Point an alias back at the version it had before (one command; live in running servers)."""
    try:
        e = _registry(registry).rollback(task, alias)
    except _registry_errors() as err:
        _fail(err)
    console.print(f"{task}@{alias} -> {e.ref} (rolled back)")


@registry_app.command("delete")
def registry_delete(
    task: str = typer.Argument(...),
    version: int = typer.Argument(...),
    force: bool = typer.Option(False, help="Also unset aliases that point at it."),
    registry: Path | None = REGISTRY_OPT,
) -> None:
    """Mark a version deleted (its files go at the next gc)."""
    try:
        _registry(registry).delete(task, version, force=force)
    except _registry_errors() as err:
        _fail(err)
    console.print(f"deleted {task}@{version}")


@registry_app.command("gc")
def registry_gc(registry: Path | None = REGISTRY_OPT) -> None:
    """Remove stored files no live version uses, and leftovers of interrupted registrations."""
    try:
        out = _registry(registry).gc()
    except _registry_errors() as err:
        _fail(err)
    console.print(
        f"removed {out['removed_objects']} folders ({out['freed_bytes'] / 1e6:.1f} MB), "
        f"{out['removed_tmp']} interrupted writes"
    )


@keys_app.command("add")
def keys_add(
    name: str = typer.Argument(..., help="Who or what the key is for."),
    tasks: str = typer.Option(
        ..., help="Comma-separated tasks it may use; '*' for all, 'base' for the plain base model."
    ),
    registry: Path | None = REGISTRY_OPT,
) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    try:
        key = _registry(registry).api_keys.add(name, [t.strip() for t in tasks.split(",") if t.strip()])
    except _registry_errors() as err:
        _fail(err)
    console.print(key, highlight=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(registry: Path | None = REGISTRY_OPT) -> None:
    for k in _registry(registry).api_keys.list():
        console.print(f"{k['name']}: {', '.join(k['tasks'])}{' (revoked)' if k['revoked'] else ''}")


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(...), registry: Path | None = REGISTRY_OPT) -> None:
    try:
        _registry(registry).api_keys.revoke(name)
    except _registry_errors() as err:
        _fail(err)
    console.print(f"revoked {name}")


@feedback_app.command("export")
def feedback_export(
    task: str = typer.Argument(...),
    out: Path = typer.Option(..., help="JSONL file to write (the data format `train` reads)."),
    registry: Path | None = REGISTRY_OPT,
    redact: bool = typer.Option(
        False,
        "--redact",
        help="Replace personal data (emails, phone, card and IBAN numbers, IP addresses) in the rows.",
    ),
) -> None:
    """Write the task's feedback as a training set: corrections, and answers rated good; report personal data."""
    from adaptlab.privacy import NOT_DETECTED
    from adaptlab.serving.feedback import export_feedback

    try:
        stats = export_feedback(_registry(registry), task, out, redact=redact)
    except _registry_errors() as err:
        _fail(err)
    console.print(
        f"wrote {stats['written']} examples to {out} from {stats['requests']} rated requests "
        f"({stats['skipped_without_answer']} rated without a correction were skipped)"
    )
    pd = stats["personal_data"]
    verb = "redacted" if redact else "found (pass --redact to replace them)"
    console.print(f"personal data {verb}: " + ("none" if not pd["total"] else f"{pd['total']} finding(s)"))
    for line in pd["summary"]:
        console.print(f"  {line}")
    console.print(f"  not detected: {'; '.join(NOT_DETECTED)}", style="dim")


@app.command("improve")
@config_options(ImproveOptions)
def improve_cmd(
    task: str = typer.Argument(..., help="Registry task whose feedback trains the next version."),
    out: Path = typer.Option(..., help="Folder for the challenger, its training rows and the evidence."),
    epochs: float | None = typer.Option(None, help="Epochs instead of the recipe's."),
    registry: Path | None = REGISTRY_OPT,
    data_dir: Path | None = typer.Option(None, help="Folder of named datasets, if the recipe names one."),
    **options,  # ImproveOptions' options (config_options)
) -> None:
    """Train the next version from the champion's recipe plus feedback; register it as staging; promote it
    only if it wins by the margin without a significant loss on held-out rows."""
    from adaptlab.maintenance.improve import improve
    from adaptlab.privacy import PersonalDataError
    from adaptlab.utils import set_torch_threads

    set_torch_threads()
    try:
        opts = ImproveOptions(
            **options,
            data_dir=str(data_dir) if data_dir else None,
            train_overrides={"epochs": epochs} if epochs else None,
        )
        improve(_registry(registry, read_only=False), task, out, opts, log=console.print)
    except (*_registry_errors(), PersonalDataError, ValueError) as err:
        _fail(err)
    console.print((out / "improve.md").read_text())


@app.command("rebase")
@config_options(RebaseOptions)
def rebase_cmd(
    task: str = typer.Argument(..., help="Registry task to move onto another base model."),
    model: str = typer.Option(..., help="The new base model (a name from `adaptlab models list`, or a path)."),
    out: Path = typer.Option(..., help="Folder for the rebased adaptation and the evidence."),
    epochs: float | None = typer.Option(None, help="Epochs instead of the recipe's."),
    registry: Path | None = REGISTRY_OPT,
    data_dir: Path | None = typer.Option(None, help="Folder of named datasets, if the recipe names one."),
    **options,  # RebaseOptions' options (config_options)
) -> None:
    """Re-make the task's adaptation on another base (hard prompts move as they are; trained ones are
    trained again or distilled), compare it with the serving version, register it as staging."""
    from adaptlab.maintenance.rebase import rebase
    from adaptlab.utils import set_torch_threads

    set_torch_threads()
    try:
        opts = RebaseOptions(
            **options,
            data_dir=str(data_dir) if data_dir else None,
            train_overrides={"epochs": epochs} if epochs else None,
        )
        rebase(_registry(registry, read_only=False), task, model, out, opts, log=console.print)
    except (*_registry_errors(), ValueError) as err:
        _fail(err)
    console.print((out / "rebase.md").read_text())


@app.command("drift")
@config_options(DriftConfig)
def drift_cmd(
    task: str = typer.Argument(..., help="Registry task whose served traffic to check."),
    registry: Path | None = REGISTRY_OPT,
    prometheus: Path | None = typer.Option(
        None,
        help="Also write the result as Prometheus gauges to this file (node_exporter's textfile collector reads it).",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the report as JSON."),
    data_dir: Path | None = typer.Option(None, help="Folder of named datasets, if the recipe names one."),
    **options,  # DriftConfig's options (config_options)
) -> None:
    """Does recent traffic still look like the data the serving version was judged on? Says whether
    retraining is due and why (labels, input lengths, unknown words, input embeddings)."""
    from adaptlab.maintenance.drift import drift_for_task
    from adaptlab.utils import atomic_write_json, atomic_write_text, set_torch_threads

    set_torch_threads()
    try:
        cfg = DriftConfig(**options)  # checked before the registry is opened
        rep = drift_for_task(_registry(registry), task, cfg, data_dir=str(data_dir) if data_dir else None)
    except (*_registry_errors(), ValueError) as err:
        _fail(err)
    table = Table(
        title=f"drift of {rep.version}: {rep.recent_rows} recent requests vs {rep.reference_rows} reference rows"
    )
    for col in ("signal", "statistic", "value", "p", "reference", "recent", "drift"):
        table.add_column(col)
    for sig in rep.signals:
        table.add_row(
            sig.name,
            sig.statistic,
            f"{sig.value:.4f}",
            f"{sig.p:.4f}",
            "-" if sig.reference is None else f"{sig.reference:.3f}",
            "-" if sig.recent is None else f"{sig.recent:.3f}",
            "yes" if sig in rep.drifted else "",
        )
    console.print(table)
    console.print(rep.reason())
    if prometheus is not None:
        atomic_write_text(prometheus, rep.prometheus())
    if json_out is not None:
        atomic_write_json(json_out, rep.to_dict())


@app.command("serve")
@config_options(ServeConfig)
def serve_cmd(
    model: str = typer.Option(
        DEFAULT_MODEL,
        help="Base model every adaptation runs on; several, comma-separated, "
        "are held in one process, each version served on its own base.",
    ),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, help="Port."),
    registry: Path | None = REGISTRY_OPT,
    max_body_kb: int = typer.Option(1024, help="Largest request body."),
    preload: str = typer.Option("", help="Comma-separated models to load at start (TASK, TASK@ALIAS, ...)."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without API keys (development on loopback)."),
    ui: bool = typer.Option(
        False,
        "--ui",
        help="Also serve the workbench at /ui (sign-in with a '*' key unless "
        "--no-auth); its compares and uploads go to --ui-dir.",
    ),
    ui_dir: Path = typer.Option(Path("adaptlab-ui"), help="Work folder of the workbench (uploads, compares, exports)."),
    device: str = DEVICE_OPT,
    drift_interval: float = typer.Option(
        300.0,
        help="Seconds between recomputing the drift gauges /metrics shows (0: no drift gauges); see `adaptlab drift`.",
    ),
    config: Path | None = _config_opt("serve"),
    **serving,  # ServeConfig's options (config_options)
) -> None:
    """OpenAI-compatible server for every registered adaptation of one base model (or several: --model A,B)."""
    import uvicorn

    from adaptlab.models.base import load_base, resolve_device
    from adaptlab.serving.app import create_app
    from adaptlab.utils import set_torch_threads

    try:
        config = ServeConfig(**serving)
        reg = _registry(registry)
        set_torch_threads()
        names = [m.strip() for m in model.split(",") if m.strip()]
        bases = [load_base(m, device=resolve_device(device)) for m in names]
        service = _service_with_gauges(bases, reg, config, drift_interval)
        app_ = create_app(service, auth=not no_auth, max_body_bytes=max_body_kb * 1024)
        if ui:
            from adaptlab.ui.app import include_ui
            from adaptlab.ui.state import UiState

            include_ui(
                app_,
                UiState(
                    ui_dir,
                    reg,
                    model=names[0],
                    key_required=not no_auth,
                    service=service,
                    max_upload_bytes=max_body_kb * 1024,
                ),
            )
        for name in filter(None, (p.strip() for p in preload.split(","))):
            service.resolve(name)
    except Exception as err:  # noqa: BLE001 - bad settings, registry errors, ServingError from preload
        _fail(err)
    console.print(
        f"serving {', '.join(b.name for b in bases)} + {len(reg.tasks())} tasks on http://{host}:{port}/v1 "
        f"({'no auth' if no_auth else 'API keys required'})"
        + (f"; workbench on http://{host}:{port}/ui/" if ui else "")
    )
    _serve_on_this_thread(service, uvicorn.Server(uvicorn.Config(app_, host=host, port=port, log_level="warning")))


def _serve_on_this_thread(service, server) -> None:
    """HTTP on a thread of its own and the model's batches on this one, the thread that loaded the
    weights (``Service(threads=False)``: on 2 cores a second thread's OpenMP team made every small
    product wait for a sleeping thread; 8 LoRAs over HTTP did 52.9 tokens/s that way, 80.4 this way). Ctrl-C and SIGTERM stop the HTTP server as uvicorn does on the main thread
    (requests in flight are answered first); the batches stop when it has."""
    import signal
    import threading

    def stop(*_):
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    http = threading.Thread(target=server.run, name="adaptlab-http", daemon=True)
    http.start()
    try:
        service.run(until=lambda: not http.is_alive())
    finally:
        server.should_exit = True
        http.join(timeout=30)
        service.close()
    if not server.started:  # it could not bind, or failed to start: uvicorn logged why
        raise typer.Exit(1)


def _service_with_gauges(bases, reg, config, drift_interval: float):
    """The serving core over ``bases``, its /metrics with the drift gauges when ``drift_interval`` > 0
    (registered here, so the serving package imports nothing from maintenance)."""
    from adaptlab.maintenance.drift import DriftWatch
    from adaptlab.serving import Service
    from adaptlab.serving.http import Metrics

    service = Service(bases, reg, config, metrics=Metrics(), threads=False)  # worked by _serve_on_this_thread
    if drift_interval > 0:
        service.metrics.add_source(DriftWatch(service, drift_interval).text)
    return service


@app.command("ui")
def ui_cmd(
    host: str = typer.Option(
        "127.0.0.1", help="Address to bind. Beyond loopback, signing in with an API key scoped to '*' is required."
    ),
    port: int = typer.Option(7860, help="Port."),
    workdir: Path = typer.Option(
        Path("adaptlab-ui"),
        help="Work folder: uploads, compares (each a run folder), "
        "exports. Restarting on the same folder shows them again.",
    ),
    model: str = typer.Option(DEFAULT_MODEL, help="Base model of the playground and the default of the compare form."),
    registry: Path | None = REGISTRY_OPT,
    data_dir: Path | None = typer.Option(None, help="Folder of named datasets."),
    require_key: bool = typer.Option(False, help="Require signing in on loopback too."),
    max_upload_mb: int = typer.Option(20, help="Largest upload."),
    open_: list[Path] = typer.Option(
        [],
        "--open",
        help="A run folder made by `adaptlab compare` to list among the compares (it stays where it is); repeatable.",
    ),
) -> None:
    """The web workbench: data check, compare (live), report, registry, playground and feedback."""
    import ipaddress

    import uvicorn

    from adaptlab.ui import create_ui
    from adaptlab.ui.state import UiError, UiState

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    try:
        reg = _registry(registry)
        need_key = require_key or not loopback
        if need_key and not any("*" in k["tasks"] and not k["revoked"] for k in reg.api_keys.list()):
            raise ValueError(
                f"binding {host} needs a key to sign in with: create one with `adaptlab keys add NAME --tasks '*'`"
            )
        if max_upload_mb < 1:
            raise ValueError(f"--max-upload-mb {max_upload_mb}: must be at least 1")
        st = UiState(
            workdir, reg, model=model, data_dir=data_dir, key_required=need_key, max_upload_bytes=max_upload_mb << 20
        )
        web = create_ui(st)
        for folder in open_:
            web.state.jobs.adopt(folder)
    except UiError as err:
        _fail(ValueError(err.message))
    except (ValueError, OSError, *_registry_errors()) as err:
        _fail(err)
    console.print(
        f"adaptlab ui on http://{'[' + host + ']' if ':' in host else host}:{port}/ui/ "
        f"({'sign-in with a key required' if need_key else 'loopback, no sign-in'}; work folder {workdir})"
    )
    uvicorn.run(web, host=host, port=port, log_level="warning")


def quiet_libraries() -> None:
    """Keep the libraries' own deprecation and advice warnings off the user's terminal: they speak
    of calls adaptlab makes, which a user cannot act on (the calls are kept current and the
    dependency ranges in pyproject.toml bounded instead), nor its per-load progress bars.
    ``ADAPTLAB_WARNINGS=1`` shows them."""
    import logging
    import os
    import warnings

    if os.environ.get("ADAPTLAB_WARNINGS") == "1":
        return
    # By category too: a deprecation warning is attributed to its caller's module (ours), not the library's.
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    for module in ("transformers", "peft", "torch", "accelerate", "huggingface_hub", "tokenizers"):
        warnings.filterwarnings("ignore", module=module)
        logging.getLogger(module).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # transformers 5 draws a "Loading weights" bar on every load from the cache (under a second, a
    # line of carriage returns in every log); adaptlab reports its own progress. The GGUF
    # dequantization on a first load (about a minute) uses plain tqdm and still shows.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported already: the variable above is read at import
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def main() -> None:
    quiet_libraries()
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
