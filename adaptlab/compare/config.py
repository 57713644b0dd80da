"""What a comparison runs: typed, validated at construction, stored with the results."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

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
    data: str = field(metadata={"help": "Dataset file, folder or name."})
    model: str = "gemma-3-270m"
    strategies: list[str] = field(default_factory=lambda: list_strategies(default=True))
    train_sizes: list = field(default_factory=lambda: [16, 64, 256, "all"])
    seeds: int = 1
    budget_seconds: float | None = None
    epochs: float = 2.0
    strategy_epochs: dict = field(default_factory=dict)  # per-strategy epochs, over each strategy's own default
    strategy_settings: dict = field(default_factory=dict)
    test_limit: int = 0
    dev_limit: int = 64
    eval_every: int = 0       # gradient strategies: dev evaluation every N steps (0: once per epoch)
    patience: int = 0         # stop after N dev evaluations without improvement (0: never)
    fragility_k: int = 3
    fragility_examples: int = 48
    forgetting: bool = True
    consistency_examples: int = 16      # test inputs sampled for consistency under sampling (0: not measured)
    consistency_samples: int = 4        # samples per input
    consistency_temperature: float = 0.7
    gallery_examples: int = 6           # test inputs shown side by side in the report (outputs are stored per row)
    price_per_hour: float = 0.10
    keep_artifacts: str = "small"
    data_dir: str | None = None
    device: str = "auto"
    adaptive: bool = False              # race the strategies (compare/adaptive.py) instead of running the whole grid
    confidence: float = 0.95            # of the bounds the race and the paired statistics use
    tune: bool = False                  # fit each strategy's search variants on dev first (compare/tuning.py)
    # Hosted candidates: endpoint definitions (adaptlab.backends.endpoints.EndpointSpec fields); a
    # strategy named STRATEGY@NAME runs that prompt strategy on endpoint NAME.
    endpoints: list = field(default_factory=list)
    volume: float | None = None         # predictions per month the user expects (break-even, recommendation)
    response_cache: str | None = None   # SQLite file of endpoint answers already paid for (None: none)
    # The LM that proposing strategies (gepa) ask: an endpoint name (of endpoints or proposer_endpoints)
    # or "self"; proposer_endpoints are opened for that and are not candidates themselves.
    proposer: str | None = None
    proposer_endpoints: list = field(default_factory=list)
    # Quality the user gives up to own a prompt rather than trained weights (rule prompt_enough).
    prompt_margin: float = 0.02
    # A budget that cannot fit a first look at every candidate and the winner's run: refuse (True), or
    # keep the cheapest candidate of each family and name the ones left out (False).
    strict_budget: bool = False

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
            self.strategies = list(dict.fromkeys(
                c for s in self.strategies
                for c in ([f"{s}@{m}" for m in models] if split_candidate(s)[1] is None else [s])))
        for s in self.strategies:
            strategy, where = split_candidate(s)
            if where is None or where in models:
                continue
            if where not in names:
                raise ValueError(f"--strategies: {s} names endpoint {where!r}, which is not defined "
                                 f"(defined: {', '.join(names) or 'none'})")
            if get_strategy(strategy).kind != "prompt":
                raise ValueError(f"--strategies: {s}: {strategy} changes weights; only prompt strategies run on "
                                 f"an endpoint")
        if self.proposer is not None and self.proposer != "self" and \
                self.proposer not in names + [e["name"] for e in self.proposer_endpoints]:
            raise ValueError(f"--proposer {self.proposer!r}: not an endpoint of this compare "
                             f"(defined: {', '.join(names) or 'none'}); give NAME=URL,... or 'self'")
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
        for name in ("test_limit", "fragility_k", "fragility_examples", "eval_every", "patience",
                     "consistency_examples", "gallery_examples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0")
        if not 0 <= self.prompt_margin < 1:
            raise ValueError(f"--prompt-margin {self.prompt_margin}: must be in [0, 1) (0.02 is 2 points)")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence={self.confidence}: must be in [0.5, 1)")
        bad = [s for s in self.strategy_settings if s not in known]
        if bad:
            raise ValueError(f"strategy_settings: unknown strategy {', '.join(bad)}")

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
        return {**self.strategy_settings.get(name, {}), **(self.strategy_settings if table is None else table).get(
            candidate, {})}

    def endpoint(self, name: str) -> dict:
        return next(e for e in self.endpoints if e["name"] == name)

    def epochs_for(self, strategy: str) -> float:
        """Epochs of ``strategy``'s runs: as set, else the strategy's own default, else ``epochs``."""
        default = get_strategy(strategy).default_epochs
        name = split_candidate(strategy)[0]
        return float(self.strategy_epochs.get(strategy, self.strategy_epochs.get(
            name, default if default is not None else self.epochs)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def load(cls, path) -> "CompareConfig":
        """A compare's saved settings (its ``compare.json``): a resumed compare, a worker or the
        workbench starts from this file, never from re-written flags. Unknown keys and bad values are
        one-line errors naming the file."""
        import json
        from dataclasses import fields
        from pathlib import Path

        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a readable compare config ({e})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object of compare settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "data" not in raw:
            raise ValueError(f"{path}: missing setting 'data'")
        try:
            return cls(**raw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
