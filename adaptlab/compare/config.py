"""What a comparison runs: typed, validated at construction, stored with the results."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from adaptlab.models.base import DEFAULT_MODEL
from adaptlab.strategies.registry import get_strategy, list_strategies, split_candidate

_BUDGET = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_budget(text: str | None) -> float | None:
    """'30m', '2h', '1h30m', '90s', '600' (seconds) -> seconds; None/'' -> no budget."""
    if text is None or str(text).strip() in ("", "none"):
        return None
    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    m = _BUDGET.match(t)
    if not m or not any(m.groups()):
        raise ValueError(f"--budget {text!r}: use e.g. 30m, 2h, 1h30m, 90s")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def parse_sizes(text: str) -> list[int | str]:
    out: list[int | str] = []
    for part in str(text).split(","):
        part = part.strip()
        if part == "all":
            out.append("all")
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise ValueError(f"--train-sizes: {part!r} is not a positive integer or 'all'")
    return out


_VOLUME = re.compile(r"^(\d+(?:\.\d+)?)\s*([kKmM]?)\s*(?:/\s*(day|month|mo|year|yr))?$")


def parse_volume(text: str | None) -> float | None:
    """'1M/month', '50k/day', '200000' (per month) -> predictions per month; None/'' -> not given."""
    if text is None or str(text).strip() == "":
        return None
    m = _VOLUME.match(str(text).strip())
    if not m:
        raise ValueError(f"--volume {text!r}: use e.g. 1M/month, 50k/day, 2M/year")
    n = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()]
    per = {"day": 30.0, "month": 1.0, "mo": 1.0, "year": 1 / 12, "yr": 1 / 12}[m.group(3) or "month"]
    if n <= 0:
        raise ValueError(f"--volume {text!r}: must be positive")
    return n * per


@dataclass
class CompareConfig:
    data: str = field(metadata={"help": "Dataset file, folder of split files, or name (demo, sst2, banking77, ...)."})
    model: str = field(
        default=DEFAULT_MODEL,
        metadata={
            "help": "Base model: gemma-3-270m (default), smollm2-135m-instruct, tiny or tiny-llama (random, for "
            "tests), a .gguf file or a transformers model folder. Several, comma-separated "
            "(gemma-3-270m,smollm2-135m-instruct): each strategy runs on each base as STRATEGY@BASE, in one ranking."
        },
    )
    strategies: list[str] = field(
        default_factory=lambda: list_strategies(default=True),
        metadata={"help": "all, or a comma-separated list (see `adaptlab strategies`)."},
    )
    train_sizes: list = field(
        default_factory=lambda: [16, 64, 256, "all"], metadata={"help": "Train-set sizes for the learning curves."}
    )
    seeds: int = field(
        default=1, metadata={"cli": True, "help": "Seeds per strategy x size (mean ± std in the report)."}
    )
    budget_seconds: float | None = field(default=None, metadata={"help": "Cap for the whole compare in seconds."})
    epochs: float = field(
        default=2.0,
        metadata={"cli": True, "help": "Epochs for gradient strategies (full: 1 unless --set full.epochs=...)."},
    )
    strategy_epochs: dict = field(default_factory=dict)  # per-strategy epochs, over each strategy's own default
    strategy_settings: dict = field(default_factory=dict)
    test_limit: int = field(
        default=0, metadata={"cli": True, "help": "Score at most this many test examples (0: all)."}
    )
    dev_limit: int = field(default=64, metadata={"help": "Dev examples used for selection and early stopping."})
    eval_every: int = field(
        default=0,
        metadata={
            "cli": True,
            "help": "Gradient strategies: evaluate on dev every N steps (0: "
            "once per epoch); the best dev checkpoint is kept.",
        },
    )
    patience: int = field(
        default=0,
        metadata={
            "cli": True,
            "help": "Gradient strategies: stop after N dev evaluations without "
            "improvement (0: never); the report says where it fired.",
        },
    )
    fragility_k: int = field(
        default=3, metadata={"cli": True, "help": "Template paraphrases per run for fragility (0: off)."}
    )
    fragility_examples: int = field(
        default=48, metadata={"cli": True, "help": "Test examples used for fragility and the train-test gap."}
    )
    forgetting: bool = field(
        default=True, metadata={"cli": True, "help": "Measure general-text perplexity and a second task before/after."}
    )
    consistency_examples: int = field(
        default=16, metadata={"cli": True, "help": "Test inputs sampled for consistency under sampling (0: off)."}
    )
    consistency_samples: int = field(default=4, metadata={"cli": True, "help": "Samples per input for consistency."})
    consistency_temperature: float = field(
        default=0.7, metadata={"cli": True, "help": "Sampling temperature for consistency."}
    )
    gallery_examples: int = field(
        default=6, metadata={"cli": True, "help": "Test inputs shown side by side in the report's gallery."}
    )
    price_per_hour: float = field(
        default=0.10, metadata={"cli": True, "help": "Machine price assumed by the cost model (USD/hour)."}
    )
    keep_artifacts: str = field(default="small", metadata={"cli": True, "help": "all | small (< 100 MB) | none."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of named datasets."})
    columns: dict = field(
        default_factory=dict,
        metadata={
            "help": "Rename the file's columns to the task's "
            "fields: FILE_COLUMN=FIELD,... (e.g. "
            "question=text,answer=label)."
        },
    )
    device: str = field(default="auto", metadata={"help": "auto (a GPU when torch sees one), cpu, cuda, cuda:N."})
    adaptive: bool = field(  # race the strategies (compare/adaptive.py) instead of running the whole grid
        default=False,
        metadata={
            "help": "Race the strategies: predict each one's quality at the largest train size from its learning "
            "curve, drop those that cannot win, stop when the winner is decided (default with --budget); or run "
            "every strategy x size x seed."
        },
    )
    confidence: float = field(
        default=0.95, metadata={"cli": True, "help": "Confidence of the race's bounds and the paired intervals."}
    )
    tune: bool = field(  # fit each strategy's search variants on dev first (compare/tuning.py)
        default=False,
        metadata={
            "help": "First fit each strategy's few registered variants (learning rate, LoRA rank, prompt length, "
            "few-shot k) at the smallest size, choose on dev, and use the best for its runs (default: with "
            "--adaptive)."
        },
    )
    # Hosted candidates: endpoint definitions (adaptlab.backends.endpoints.EndpointSpec fields); a
    # strategy named STRATEGY@NAME runs that prompt strategy on endpoint NAME.
    endpoints: list = field(default_factory=list)
    volume: float | None = field(  # predictions per month the user expects (break-even, recommendation)
        default=None,
        metadata={
            "help": "Predictions you expect, e.g. 1M/month or 50k/day: the report's break-even and the "
            "recommendation's cost count training at it."
        },
    )
    response_cache: str | None = field(  # None: none
        default=None,
        metadata={
            "help": "SQLite file of endpoint answers already paid for (default $ADAPTLAB_RESPONSE_CACHE or "
            "~/.cache/adaptlab/responses.sqlite)."
        },
    )
    # The LM that proposing strategies (gepa) ask: an endpoint name (of endpoints or proposer_endpoints)
    # or "self"; proposer_endpoints are opened for that and are not candidates themselves.
    proposer: str | None = field(
        default=None,
        metadata={
            "help": "The LM that proposes instructions for gepa: an endpoint NAME from --endpoint/--endpoints, "
            "NAME=URL[,model=..,key=..,in=..,out=..] (not a candidate itself), or 'self'. Adds gepa to "
            "--strategies all."
        },
    )
    proposer_endpoints: list = field(default_factory=list)
    # Quality the user gives up to own a prompt rather than trained weights (rule prompt_enough).
    prompt_margin: float = field(
        default=0.02,
        metadata={
            "cli": True,
            "help": "Quality you give up to own a prompt instead of "
            "trained weights (0.02 = 2 points of the ranking "
            "metric): a prompt-only candidate not significantly "
            "worse than the best trained one by more than this "
            "is recommended.",
        },
    )
    # A budget that cannot fit a first look at every candidate and the winner's run: refuse (True), or
    # keep the cheapest candidate of each family and name the ones left out (False).
    strict_budget: bool = field(
        default=False,
        metadata={
            "cli": ("--strict-budget",),
            "help": "Refuse a --budget that cannot fit a first look "
            "at every candidate and the winner's run at the "
            "target (default: keep the cheapest candidate of "
            "each family, name the ones left out, go on).",
        },
    )

    def __post_init__(self):
        known = set(list_strategies())
        unknown = [s for s in self.strategies if split_candidate(s)[0] not in known]
        if unknown:
            raise ValueError(f"--strategies: unknown {', '.join(unknown)}; registered: {', '.join(sorted(known))}")
        models = self.models
        if not models or len(set(models)) != len(models):
            raise ValueError(f"--model {self.model!r}: one or more base model names, each once")
        names = [e["name"] for e in self.endpoints]
        both = sorted(set(names) & set(models))
        if both:
            raise ValueError(f"--endpoint {both[0]}: also a base model of --model; give the endpoint another name")
        if len(models) > 1:  # several bases: every local strategy runs on each, as STRATEGY@BASE
            self.strategies = list(
                dict.fromkeys(
                    c
                    for s in self.strategies
                    for c in ([f"{s}@{m}" for m in models] if split_candidate(s)[1] is None else [s])
                )
            )
        for s in self.strategies:
            strategy, where = split_candidate(s)
            if where is None or where in models:
                continue
            if where not in names:
                raise ValueError(
                    f"--strategies: {s} names endpoint {where!r}, which is not defined "
                    f"(defined: {', '.join(names) or 'none'})"
                )
            if get_strategy(strategy).kind != "prompt":
                raise ValueError(
                    f"--strategies: {s}: {strategy} changes weights; only prompt strategies run on an endpoint"
                )
        if (
            self.proposer is not None
            and self.proposer != "self"
            and self.proposer not in names + [e["name"] for e in self.proposer_endpoints]
        ):
            raise ValueError(
                f"--proposer {self.proposer!r}: not an endpoint of this compare "
                f"(defined: {', '.join(names) or 'none'}); give NAME=URL,... or 'self'"
            )
        if self.volume is not None and self.volume <= 0:
            raise ValueError(f"volume={self.volume}: must be positive")
        if not self.strategies:
            raise ValueError("--strategies: none selected")
        if self.seeds < 1:
            raise ValueError(f"--seeds {self.seeds}: must be >= 1")
        if not self.train_sizes:
            raise ValueError("--train-sizes: none given")
        if self.budget_seconds is not None and self.budget_seconds <= 0:
            raise ValueError("--budget must be positive")
        if self.keep_artifacts not in ("all", "small", "none"):
            raise ValueError(f"keep_artifacts={self.keep_artifacts!r}: all, small or none")
        if self.consistency_examples and self.consistency_samples < 2:
            raise ValueError(f"consistency_samples={self.consistency_samples}: must be >= 2")
        if not 0 < self.consistency_temperature <= 2:
            raise ValueError(f"consistency_temperature={self.consistency_temperature}: must be in (0, 2]")
        for name in (
            "test_limit",
            "fragility_k",
            "fragility_examples",
            "eval_every",
            "patience",
            "consistency_examples",
            "gallery_examples",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0")
        if not 0 <= self.prompt_margin < 1:
            raise ValueError(f"--prompt-margin {self.prompt_margin}: must be in [0, 1) (0.02 is 2 points)")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence={self.confidence}: must be in [0.5, 1)")
        bad = [s for s in self.strategy_settings if split_candidate(s)[0] not in known]
        if bad:
            raise ValueError(f"strategy_settings: unknown strategy {', '.join(bad)}")
        from adaptlab.strategies.registry import make_config, split_lr

        for s, kw in self.strategy_settings.items():  # checked now, not at run 7
            name = split_candidate(s)[0]
            make_config(name, **split_lr(name, kw)[0])

    @property
    def models(self) -> list[str]:
        """The local base models (``--model a,b``): the first is the primary one (forgetting's
        reference text, the cost probe); with several, each local candidate names its base."""
        return [m.strip() for m in str(self.model).split(",") if m.strip()]

    def endpoint_of(self, candidate: str) -> str | None:
        """The endpoint a candidate runs on (``STRATEGY@ENDPOINT``); None for a local one."""
        where = split_candidate(candidate)[1]
        return where if where is not None and where not in self.models else None

    def base_of(self, candidate: str) -> str | None:
        """The local base a candidate adapts (``STRATEGY@BASE``, or the primary base); None for a hosted one."""
        where = split_candidate(candidate)[1]
        return self.models[0] if where is None else where if where in self.models else None

    def settings_for(self, candidate: str, table: dict | None = None) -> dict:
        """A candidate's strategy settings: its strategy's (``--set few_shot.k=2``), then the
        candidate's own in ``table`` (the compare's settings, or those tuning chose), so that
        ``few_shot@gpt`` and ``lora@smollm2-135m-instruct`` get what ``--set`` gave their strategy."""
        name = split_candidate(candidate)[0]
        return {
            **self.strategy_settings.get(name, {}),
            **(self.strategy_settings if table is None else table).get(candidate, {}),
        }

    def endpoint(self, name: str) -> dict:
        return next(e for e in self.endpoints if e["name"] == name)

    def epochs_for(self, strategy: str) -> float:
        """Epochs of ``strategy``'s runs: as set, else the strategy's own default, else ``epochs``."""
        default = get_strategy(strategy).default_epochs
        name = split_candidate(strategy)[0]
        return float(
            self.strategy_epochs.get(
                strategy, self.strategy_epochs.get(name, default if default is not None else self.epochs)
            )
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def load(cls, path) -> CompareConfig:
        """A compare's settings from a file: a run folder's saved ``compare.json`` (a resumed compare,
        a worker or the workbench starts from it, never from re-written flags) or a YAML file written
        by hand (:func:`from_mapping`'s spellings). Bad keys and values are one-line errors naming the
        file and the key."""
        from pathlib import Path

        return from_mapping(read_config_file(Path(path)), str(path))


def read_config_file(path) -> dict:
    """A JSON (``.json``) or YAML (``.yaml``/``.yml``) file of settings as a dict; one-line errors."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable config file ({e.strerror or e})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ValueError(f"{where}: malformed YAML: {getattr(e, 'problem', None) or e}") from None
    else:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of compare settings (key: value), got {type(raw).__name__}")
    return raw


# Spellings a hand-written file (or a Python call) may use for fields stored otherwise.
FILE_ALIASES = {"budget": "budget_seconds", "set": "strategy_settings and strategy_epochs"}


def from_mapping(raw: dict, where: str = "config") -> CompareConfig:
    """A validated config from a mapping of settings, as a YAML file, ``adaptlab.compare(**settings)``
    or a saved ``compare.json`` gives them. Besides the field names: ``budget: 20m``, ``train_sizes:
    64,256,all``, ``strategies: all`` or ``zero_shot,lora``, ``volume: 1M/month``, and ``set:
    {lora.r: 16, few_shot.k: 8}`` (merged into ``strategy_settings``). Any unknown key or a value of
    the wrong type is one line naming ``where`` and the key, with what is allowed."""
    import difflib
    from dataclasses import fields

    raw = dict(raw)
    known = {f.name: f for f in fields(CompareConfig)}
    if "budget" in raw:
        if "budget_seconds" in raw:
            raise ValueError(f"{where}: both 'budget' and 'budget_seconds' given; keep one")
        raw["budget_seconds"] = _converted("budget", raw.pop("budget"), where)
    if "set" in raw:
        raw["strategy_settings"], raw["strategy_epochs"] = _merged_sets(
            raw.get("strategy_settings"), raw.get("strategy_epochs"), raw.pop("set"), where
        )
    for key in list(raw):
        if key not in known:
            near = difflib.get_close_matches(str(key), list(known) + list(FILE_ALIASES), n=1)
            raise ValueError(
                f"{where}: unknown key '{key}'"
                + (f" (did you mean '{near[0]}'?)" if near else "")
                + f"; known: {', '.join(sorted(known))}"
            )
        raw[key] = _converted(key, raw[key], where)
        _check_type(key, raw[key], known[key].type, where)
    if "data" not in raw:
        raise ValueError(f"{where}: missing key 'data' (a file, a folder of split files or a dataset name)")
    # As on the command line: a budget races the candidates unless told not to, and a race tunes.
    if raw.get("budget_seconds") is not None and "adaptive" not in raw:
        raw["adaptive"] = True
    if "tune" not in raw:
        raw["tune"] = bool(raw.get("adaptive", False))
    try:
        return CompareConfig(**raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def _converted(key: str, value, where: str):
    """The text spellings of budget, sizes, strategies and volume as the field's value."""
    try:
        if key in ("budget", "budget_seconds") and isinstance(value, str):
            return parse_budget(value)
        if key == "train_sizes" and isinstance(value, str | int):
            return parse_sizes(str(value))
        if key == "strategies" and isinstance(value, str):
            return (
                list_strategies(default=True) if value == "all" else [s.strip() for s in value.split(",") if s.strip()]
            )
        if key == "volume" and isinstance(value, str):
            return parse_volume(value)
    except ValueError as e:
        raise ValueError(f"{where}: key '{key}': {str(e).split(': ', 1)[-1]}") from None
    return value


def _merged_sets(settings, epochs, sets, where: str) -> tuple[dict, dict]:
    """``set: {lora.r: 16, full.epochs: 1}`` merged into ``strategy_settings`` ({lora: {r: 16}}) and
    ``strategy_epochs`` ({full: 1}), as ``--set`` does."""
    if not isinstance(sets, dict):
        raise ValueError(f"{where}: key 'set': expected a mapping of strategy.key: value (e.g. lora.r: 16)")
    out = {k: dict(v) for k, v in (settings or {}).items()}
    ep = dict(epochs or {})
    for dotted, value in sets.items():
        strategy, dot, key = str(dotted).partition(".")
        if not dot or not key:
            raise ValueError(f"{where}: key 'set.{dotted}': expected strategy.key (e.g. lora.r)")
        if key == "epochs":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{where}: key 'set.{dotted}': expected a number of epochs, got {value!r}")
            ep[strategy] = float(value)
        else:
            out.setdefault(strategy, {})[key] = value
    return out, ep


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "list": (list,), "dict": (dict,)}


def _check_type(key: str, value, annotation, where: str) -> None:
    """The value against the field's annotation (``int``, ``float | None``, ``list``, ...)."""
    names = [t.strip() for t in str(annotation).replace("typing.", "").split("|")]
    if value is None:
        if "None" in names:
            return
        raise ValueError(f"{where}: key '{key}': may not be empty (null)")
    allowed = [t for n in names for t in _TYPES.get(n, ())]
    if not allowed:
        return
    ok = isinstance(value, tuple(allowed)) and not (isinstance(value, bool) and bool not in allowed)
    if not ok:
        want = " or ".join(n for n in names if n != "None")
        raise ValueError(f"{where}: key '{key}': expected {want}, got {type(value).__name__} {value!r}")


def default_of(cls, name: str):
    """A config dataclass field's default (its factory's value for lists and dicts)."""
    from dataclasses import MISSING, fields

    f = next(f for f in fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


def help_of(cls, name: str) -> str:
    from dataclasses import fields

    return next(f for f in fields(cls) if f.name == name).metadata.get("help", "")
