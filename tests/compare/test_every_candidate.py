"""Issue 36: every candidate gets a measured look before any is concluded on, no candidate wins by its
name, "prompting is enough" is an answer, and an answer that names no label is wrong."""

import json

import pytest

from adaptlab.compare import CompareConfig, run_compare
from adaptlab.compare.recommend import Constraints, recommend
from adaptlab.strategies.base import NO_LABEL

from .synthetic import rec
from .test_dependable import STRATEGIES, _cfg, _compare, _fake


def _planned_need(tmp_path, monkeypatch, strategies=None) -> float:
    """Seconds the plan says a first look at every candidate and the winner's run need (read off an
    unlimited compare of the same plan)."""
    from adaptlab.compare.schedule import AdaptivePicker

    need = {}
    real = AdaptivePicker.check_budget

    def probe(self):
        need["s"] = self.need(self.candidates())
        real(self)

    monkeypatch.setattr(AdaptivePicker, "check_budget", probe)
    _compare(tmp_path, monkeypatch, 1.0, 1e6, "probe", strategies=strategies)
    monkeypatch.setattr(AdaptivePicker, "check_budget", real)
    return need["s"]


def _leader_target_dearer(monkeypatch, factor: float = 20.0) -> None:
    """After the plan, the leader's run at the target is re-estimated ``factor`` times dearer."""
    from adaptlab.compare.schedule import AdaptivePicker

    real_seconds = AdaptivePicker.seconds

    def dearer(self, spec):
        s = real_seconds(self, spec)
        lead = self.leader()
        return s * factor if self.first_est and spec.train_size == self.target and spec.strategy == lead else s

    monkeypatch.setattr(AdaptivePicker, "seconds", dearer)


def test_every_candidate_gets_a_first_look_before_any_second_run(tmp_path, monkeypatch):
    res, race_file, _ = _compare(tmp_path, monkeypatch, 1.0, 1e6, "all")
    first = res["finished"][: len(STRATEGIES)]
    assert sorted(r.split("-")[0] for r in first) == sorted(STRATEGIES)  # one look each, then promotions
    # at the lowest fidelity; few-shot where a larger size costs no more (it reads 8 train rows, and
    # here the screening rows are every test row, so its look at the target costs what one at 16 does)
    assert all(r.endswith("-n16-s0") or r in ("zero_shot-n0-s0", "few_shot-n360-s0") for r in first), first
    assert "few_shot-n360-s0" in first
    assert race_file["candidates"] == STRATEGIES and race_file["left_out"] == [] and race_file["never_run"] == []


def test_a_short_budget_keeps_one_candidate_of_each_family_and_names_the_rest(tmp_path, monkeypatch):
    from adaptlab.compare.schedule import AdaptivePicker

    need = {}
    real = AdaptivePicker.check_budget

    def probe(self):  # what every candidate, and the cheapest of each family, would need
        need["all"] = self.need(self.candidates())
        keep = {}
        for c in sorted(self.candidates(), key=lambda c: self.seconds(self.first_look(c))):
            keep.setdefault(self.group(c), c)
        need["families"] = self.need(list(keep.values()))
        real(self)

    monkeypatch.setattr(AdaptivePicker, "check_budget", probe)
    _compare(tmp_path, monkeypatch, 1.0, 1e6, "probe")
    assert need["families"] < need["all"]
    budget = (need["families"] + need["all"]) / 2
    res, race_file, spent = _compare(tmp_path, monkeypatch, 1.0, budget, "short")
    left = {x["candidate"] for x in race_file["left_out"]}
    assert left and left <= {"few_shot", "lora", "full", "soft_prompt", "zero_shot"}
    kept = set(STRATEGIES) - left
    families = {
        "zero_shot": "prompt",
        "few_shot": "prompt",
        "soft_prompt": "learned_prompt",
        "lora": "adapter",
        "full": "weights",
    }
    assert {families[c] for c in kept} == set(families.values())  # both sides, and every family
    measured = {r["run"]["strategy"] for r in res["results"]}
    assert kept <= measured  # every kept candidate measured
    # a left-out candidate is measured only after the winner's run at the target (a late look), and
    # one still unmeasured is named as left out
    ran = res["finished"]
    target = next(i for i, r in enumerate(ran) if "-n360-" in r)
    assert not any(r.split("-")[0] in left for r in ran[:target]), ran
    assert {n["strategy"] for n in race_file["never_run"]} == left - measured
    assert all("left out by the budget check" in n["why"] for n in race_file["never_run"])
    assert spent <= budget * 1.05
    plan = json.loads((tmp_path / "short" / "budget_plan.json").read_text())
    assert {x["candidate"] for x in plan["left_out"]} == left  # a resumed compare keeps the choice
    # --strict-budget refuses the same budget before anything runs, naming the budget that fits.
    _fake(monkeypatch, 1.0, [0.0])
    cfg = _cfg(budget)
    cfg.strict_budget = True
    with pytest.raises(
        ValueError,
        match=r"cannot fit a first look at all 5 candidates .* use --budget \d+m or "
        r"more.*\(--strict-budget\)",
    ):
        run_compare(cfg, tmp_path / "strict", progress=False)


def test_a_budget_too_small_for_one_candidate_of_each_family_is_refused(tmp_path, monkeypatch):
    _fake(monkeypatch, 1.0, [0.0])
    with pytest.raises(ValueError, match=r"even one candidate of each family \(.*\) needs .*use --budget \d+m"):
        run_compare(_cfg(6.0), tmp_path / "small", progress=False)


def test_no_strategy_wins_by_its_name():
    """compare/ never names a strategy to decide order or reserve time; the tie-breaks are data."""
    from pathlib import Path

    import adaptlab.compare as compare
    from adaptlab.compare.lessons import tie_order
    from adaptlab.strategies.registry import list_strategies

    names = [n for n in list_strategies()]
    for path in Path(compare.__file__).parent.glob("*.py"):
        text = path.read_text()
        for n in names:
            assert f'"{n}"' not in text and f"'{n}'" not in text, f"{path.name} names {n}"
    # Candidates on other bases and endpoints are ordered by what they change, not their name.
    order = tie_order(["zero_shot@a", "lora@b", "few_shot@api", "full@a"], 1000)
    assert set(order) == {"zero_shot@a", "lora@b", "few_shot@api", "full@a"}
    assert order.index("lora@b") < order.index("zero_shot@a")  # adapters lead at 1000 in the committed grids


def _pair(trained_right, prompt_right, **kw):
    n = len(trained_right)
    return [
        rec("lora", 300, sum(trained_right) / n, right=trained_right, artifact=3e6, **kw),
        rec("few_shot", 300, sum(prompt_right) / n, right=prompt_right, artifact=5e3, tokens=400, train_s=1),
    ]


def test_prompting_is_enough_within_the_margin_and_training_wins_beyond_it():
    n = 300
    trained = [0 if i % 10 == 0 else 1 for i in range(n)]  # 0.900
    close = list(trained)
    for i in [i for i in range(n) if trained[i]][:6]:  # 0.880: 2 points under
        close[i] = 0
    enough = recommend(_pair(trained, close), Constraints(prompt_margin=0.02))
    assert enough.winner == "few_shot" and "prompt_enough" in enough.fired
    text = enough.to_markdown()
    assert (
        "prompting is enough" in text
        and "Training (lora) would change quality by +2.0 points" in text
        and "interval [" in text
    )
    far = [0 if i % 10 == 0 or i % 4 == 1 else 1 for i in range(n)]  # 0.675
    wins = recommend(_pair(trained, far), Constraints(prompt_margin=0.02))
    assert wins.winner == "lora" and "training_wins" in wins.fired and "prompt_enough" not in wins.fired
    assert "training wins by a measured margin" in wins.to_markdown()
    strict = recommend(_pair(trained, close), Constraints(prompt_margin=0.0))  # no margin: only a true tie
    assert strict.winner in ("lora", "few_shot")
    with pytest.raises(ValueError, match="prompt margin"):
        Constraints(prompt_margin=1.5)
    with pytest.raises(ValueError, match="--prompt-margin"):
        CompareConfig(data="demo", model="tiny", prompt_margin=-0.1)


def test_the_decision_line_names_the_rule_that_decided():
    from adaptlab.compare.adaptive import decision_line, race
    from adaptlab.compare.store import RunSpec

    n = 300
    trained = [0 if i % 10 == 0 else 1 for i in range(n)]
    close = list(trained)
    for i in [i for i in range(n) if trained[i]][:6]:
        close[i] = 0
    records = _pair(trained, close)
    specs = [RunSpec("lora", 300, 0), RunSpec("few_shot", 300, 0)]
    state = race(records, specs)
    line = decision_line(state, 2, 1.0, 0, recommendation=recommend(records, Constraints()))
    assert "by rule prompt_enough" in line and "few_shot is recommended" in line


def test_prompting_is_not_enough_while_a_trained_candidate_unmeasured_at_the_target_can_still_beat_it():
    """FPB on two bases at 20m: prompt search was called enough against the trained runs measured at
    128 while hybrid, predicted from 32 with a band up to 0.848, was not measured there (the 35m row
    measured it at 0.687, far above the prompt's 0.342)."""
    n = 300
    trained = [0 if i % 10 == 0 else 1 for i in range(n)]
    close = list(trained)
    for i in [i for i in range(n) if trained[i]][:6]:
        close[i] = 0
    riser = [1 if i % 5 else 0 for i in range(n)][:n]
    riser = [x if i < 180 else 0 for i, x in enumerate(riser)]  # 0.48 at 16: a band reaching far up at 300
    records = [*_pair(trained, close), rec("full", 16, sum(riser) / n, right=riser, artifact=5e8)]
    r = recommend(records, Constraints(prompt_margin=0.02))
    assert "prompt_enough" not in r.fired and r.winner == "lora"
    assert "prompting is not shown to be enough" in r.to_markdown() and "full (band up to" in r.to_markdown()
    assert "prompt_enough" in recommend(records[:2], Constraints(prompt_margin=0.02)).fired  # as before


def test_a_rule_settles_no_race_while_a_candidate_is_extrapolated_to_the_target():
    """near_tie picks among the tied candidates measured at the target; the race stays open (and says
    so) while another can still change the winner from a smaller size."""
    from adaptlab.compare.adaptive import decision_line, race
    from adaptlab.compare.store import RunSpec

    n = 300
    lead = [0 if i % 10 == 0 else 1 for i in range(n)]  # 0.900
    tied = list(lead)
    tied[1] = 0  # 0.897: within a point
    riser = [x if i < 180 else 0 for i, x in enumerate(1 if i % 5 else 0 for i in range(n))]
    measured = [
        rec("lora", 300, sum(lead) / n, right=lead, artifact=3e7),
        rec("prefix", 300, sum(tied) / n, right=tied, artifact=1e6),
    ]
    for records, settled in ((measured, True), ([*measured, rec("full", 16, sum(riser) / n, right=riser)], False)):
        specs = [RunSpec("lora", 300, 0), RunSpec("prefix", 300, 0), RunSpec("full", 300, 0)]
        best = recommend(records, Constraints())
        assert best.winner == "prefix" and "near_tie" in best.fired
        line = decision_line(race(records, specs), len(records), 1.0, 0, recommendation=best)
        assert line.startswith("tie resolved by rule near_tie") is settled, line
        assert ("settles nothing while full is not measured there" in line) is not settled, line


def test_an_answer_that_names_no_label_is_wrong_and_counted():
    from adaptlab.evaluation.metrics import classification_metrics
    from adaptlab.strategies.prompting import PromptArtifact

    class Backend:  # an endpoint that parses answers: -1 where none of the labels was named
        supports_scores = False
        calls = 0

        def choose(self, prompts, labels):
            return [0 if i % 2 == 0 else -1 for i in range(len(prompts))]

    art = PromptArtifact.__new__(PromptArtifact)
    art.__dict__.update(tiny_prompt_artifact_fields(art, Backend()))
    out = art.predict(["a", "b", "c", "d"])
    assert out == ["neg", NO_LABEL, "neg", NO_LABEL] and art.last_unparsed == 2
    # Never the majority class: where "pos" is the truth everywhere, the unparsed rows score wrong.
    m = classification_metrics(["neg", "pos", "neg", "pos"], out, ["neg", "pos"])
    assert m["accuracy"] == 0.5 and m["macro_f1"] == pytest.approx(0.5)  # neg perfect, pos never named


def tiny_prompt_artifact_fields(art, backend):
    from adaptlab.prompts import PromptTemplate
    from adaptlab.tasks.base import get_task

    return {
        "strategy": "few_shot",
        "backend": backend,
        "config": None,
        "template": PromptTemplate("t", "{text}"),
        "task": "classification",
        "spec": get_task("classification"),
        "labels": ["neg", "pos"],
        "metrics": {},
        "decoding": {},
        "exemplars": [],
        "reserve": [],
        "selection": "fixed",
        "k": 0,
        "pool": [],
        "pool_embeddings": None,
        "calibration": None,
        "trace": [],
        "last_unparsed": 0,
        "last_unparsed_rows": [],
    }


def test_the_report_counts_no_label_answers_per_candidate():
    a = rec("few_shot@api", 0, 0.6, kind="prompt", test_n=200)
    a["eval"]["test"]["unparsed"] = 79
    b = rec("lora", 0, 0.7, test_n=200)
    out = recommend([a, b], Constraints()).to_markdown()
    assert "answers that named no label, scored wrong: few_shot@api on 79 of 200 rows" in out


def test_candidates_on_two_bases_and_an_endpoint_each_get_a_first_look(tmp_path):
    """STRATEGY@WHERE is first-class: with --model a,b and an endpoint, every candidate is measured on
    the same test rows before any second run, and the report counts them."""
    from typer.testing import CliRunner

    from adaptlab.cli import app
    from tests.backends.test_endpoints import fake_endpoint

    from .test_hosted import _data

    data = _data(tmp_path)
    with fake_endpoint() as fake:
        r = CliRunner().invoke(
            app,
            [
                "compare",
                "--data",
                str(data),
                "--model",
                "tiny,tiny-llama",
                "--strategies",
                "zero_shot,lora",
                "--endpoint",
                f"api={fake.url}/v1,model=fake",
                "--train-sizes",
                "4,8",
                "--budget",
                "30m",
                "--no-tune",
                "--out",
                str(tmp_path / "run"),
                "--no-forgetting",
                "--fragility-k",
                "0",
                "--consistency-examples",
                "0",
                "--no-progress",
                "--set",
                "lora.epochs=1",
            ],
        )
    assert r.exit_code == 0, r.output
    race_file = json.loads((tmp_path / "run" / "race.json").read_text())
    asked = ["zero_shot@tiny", "zero_shot@tiny-llama", "lora@tiny", "lora@tiny-llama", "zero_shot@api"]
    assert sorted(race_file["candidates"]) == sorted(asked)
    order = [line.split("]")[1].split()[0] for line in r.output.splitlines() if line.startswith("[")]
    assert sorted(c.rsplit("-n", 1)[0] for c in order[:5]) == sorted(asked)  # a first look each, first
    results = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "run" / "results").glob("*.json")}
    rows = {k: [p["id"] for p in v["predictions"]] for k, v in results.items() if v["run"]["train_size"] in (0, 4)}
    assert len(rows) == 5 and len({tuple(v) for v in rows.values()}) == 1  # the same test rows for each look
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "Candidates measured: 5 of 5 asked (both sides of the question" in report


def test_a_prompt_that_leads_within_the_noise_is_settled_by_prompting_is_enough():
    """SST-2 at 32 examples: few-shot leads, the trained ones within the noise; no rule used to settle it."""
    n = 300
    prompt = [0 if i % 10 == 0 else 1 for i in range(n)]  # 0.900
    trained = list(prompt)
    for i in [i for i in range(n) if prompt[i]][:3]:  # 0.890
        trained[i] = 0
    r = recommend(
        [
            rec("lora", 32, sum(trained) / n, right=trained, artifact=3e6),
            rec("few_shot", 32, sum(prompt) / n, right=prompt, artifact=5e3, tokens=400, train_s=1),
        ],
        Constraints(),
    )
    assert r.winner == "few_shot" and "prompt_enough" in r.fired
    assert "Training (lora) would change quality by -1.0 points" in r.to_markdown()


def test_when_the_first_looks_run_long_the_winner_is_still_measured_at_the_target(tmp_path, monkeypatch):
    """E2E at 256: the first looks took longer than estimated, the last one did not fit what was left,
    and the compare ended with nothing measured at the target although time was reserved for it."""

    need = {"s": _planned_need(tmp_path, monkeypatch)}
    res, race_file, spent = _compare(tmp_path, monkeypatch, 0.7, need["s"] * 1.02, "slow")
    assert race_file["left_out"] == []  # accepted: it fitted by the estimates
    never = {n["strategy"] for n in race_file["never_run"]}
    assert never and all("budget" in n["why"] for n in race_file["never_run"])
    best = recommend(res["results"], Constraints())
    assert best.target == 360 and not best.ranked[0]["predicted"]  # the winner measured at the target
    assert any(r["run"]["train_size"] == 360 for r in res["results"])


def test_a_first_look_that_missed_round_one_is_made_once_the_winner_is_measured(tmp_path, monkeypatch):
    """E2E at 256 re-run: hybrid's first look did not fit round one beside the reserve, and minutes
    were left when the compare ended. Once the winner is measured at the target, a first look that
    fits the time left is made (here, at half the estimated speed, one candidate's look comes last)."""

    need = {"s": _planned_need(tmp_path, monkeypatch)}
    res, race_file, spent = _compare(tmp_path, monkeypatch, 0.5, need["s"], "slow")
    ran = res["finished"]
    at_target = next(i for i, r in enumerate(ran) if "-n360-" in r)
    late = [r for r in ran[at_target + 1 :] if r.split("-")[0] not in {x.split("-")[0] for x in ran[: at_target + 1]}]
    assert late, ran  # a first look made after the winner's run
    assert not any(n["strategy"] == late[0].split("-")[0] for n in race_file["never_run"])
    assert spent <= need["s"] * 1.05


def test_a_first_look_that_cannot_finish_beside_the_reserve_waits_for_a_late_look(tmp_path, monkeypatch):
    """AG News at 1000: tuning chose few-shot's nearest exemplars, so its first look, planned at 13 s,
    was re-estimated at 96 s; started in round one beside the time held for the winner, it was cut at
    88 s with nothing measured. A first look whose current estimate cannot finish beside the reserve
    is not started in round one: it waits for a late look (or is named never run)."""
    from adaptlab.compare.schedule import AdaptivePicker

    need = {"s": _planned_need(tmp_path, monkeypatch)}
    real_seconds = AdaptivePicker.seconds

    def dearer(self, spec):  # after the plan, few-shot's runs are re-estimated 50 times dearer
        s = real_seconds(self, spec)
        return s * 50 if spec.strategy == "few_shot" and self.first_est else s

    monkeypatch.setattr(AdaptivePicker, "seconds", dearer)
    res, race_file, spent = _compare(tmp_path, monkeypatch, 1.0, need["s"], "dearer")
    ran = res["finished"]
    target = next(i for i, r in enumerate(ran) if "-n360-" in r)
    assert not any(r.startswith("few_shot-") for r in ran[:target]), ran  # not started in round one
    others = {r.split("-")[0] for r in ran[:target]}
    assert others >= set(STRATEGIES) - {"few_shot"}  # every other candidate still looked at first
    looked_late = any(r.startswith("few_shot-") for r in ran[target:])
    named = [n for n in race_file["never_run"] if n["strategy"] == "few_shot"]
    assert looked_late or named
    assert spent <= need["s"] * 1.05


def test_when_the_leaders_run_at_the_target_no_longer_fits_another_candidate_is_measured_there(tmp_path, monkeypatch):
    """Financial PhraseBank on two bases and an endpoint: the leader's run at the target was
    re-estimated past the time left, tried, cut at the budget's end, and the answer stayed at the
    smallest size. The best-predicted candidate whose own run at the target fits is measured there
    instead, and the answer rests on the user's size."""

    need = {"s": _planned_need(tmp_path, monkeypatch)}
    _leader_target_dearer(monkeypatch)
    res, race_file, spent = _compare(tmp_path, monkeypatch, 1.0, need["s"] * 1.5, "dearer")
    at_target = [r for r in res["results"] if r["run"]["train_size"] == 360]
    assert at_target, res["finished"]
    best = recommend(res["results"], Constraints())
    assert best.target == 360 and not best.ranked[0]["predicted"]
    assert spent <= need["s"] * 1.5 * 1.05


def test_a_leaders_run_that_misses_the_time_left_by_a_little_is_tried_before_a_stand_in(tmp_path, monkeypatch):
    """Banking77 at 20m: LoRA's run at 1000, re-estimated at 537 s, missed the 526 s left by 2%;
    prompt search stood in and LoRA was recommended on its run at 16 examples. A leader's run that
    misses by less than the estimates err (NEAR_SHARE) is tried first; one that misses by more still
    gives way to a stand-in."""
    from adaptlab.compare.schedule import AdaptivePicker

    need = {"s": _planned_need(tmp_path, monkeypatch)}
    seen = {}
    real_stand_in = AdaptivePicker._stand_in

    def stand_in(self, done, spent, lead):  # what the leader's run needed and found when it gave way
        run = self.at_target(lead)
        seen.setdefault(
            "miss", (lead, self.seconds(run), self.cfg.budget_seconds - spent - self.reserve(done, but=run))
        )
        return real_stand_in(self, done, spent, lead)

    monkeypatch.setattr(AdaptivePicker, "_stand_in", stand_in)
    _leader_target_dearer(monkeypatch)
    res, _, _ = _compare(tmp_path, monkeypatch, 1.0, need["s"] * 1.5, "far")
    lead, est, left = seen["miss"]
    run = f"{lead}-n360-s0"
    after_round_one = res["finished"][len(STRATEGIES) :]  # few-shot's first look is at the target
    assert next(r for r in after_round_one if "-n360-" in r) != run, res["finished"]  # a stand-in
    # The same compare with the leader's run just past the time it finds left (the factor applies on
    # top of the first one's: monkeypatch wraps the dearer estimate)
    _leader_target_dearer(monkeypatch, left / ((AdaptivePicker.NEAR_SHARE + 0.02) * est))
    res, _, _ = _compare(tmp_path, monkeypatch, 1.0, need["s"] * 1.5, "near")
    after_round_one = res["finished"][len(STRATEGIES) :]
    assert next(r for r in after_round_one if "-n360-" in r) == run, res["finished"]


def test_after_a_stand_in_is_measured_the_first_looks_that_missed_round_one_are_made(tmp_path, monkeypatch):
    """AG News at 500, half speed, 19m: the first looks ran long, LoRA's and prefix's did not fit beside
    the time held for the winner; full led, its run at the target (978 s) did not fit, few-shot was
    measured there in its place, and the compare ended at 47% of its budget with LoRA and prefix
    never run. Once a stand-in is measured, the time held for the leader's run is free (that run no
    longer fits): the first looks that missed round one are made in it."""

    strategies = [*STRATEGIES, "prefix"]  # two learned prompts: round one makes the dearer one last
    need = {"s": _planned_need(tmp_path, monkeypatch, strategies)}
    _leader_target_dearer(monkeypatch)
    res, race_file, spent = _compare(tmp_path, monkeypatch, 0.5, need["s"] * 1.65, "slow", strategies=strategies)
    ran = res["finished"]
    stand_in = next(i for i, r in enumerate(ran) if "-n360-" in r)
    before = {r.split("-")[0] for r in ran[:stand_in]}
    late = {r.split("-")[0] for r in ran[stand_in + 1 :]} - before
    assert before < set(strategies), ran  # round one ran long: some first looks missed it
    assert late, ran  # and are made after the stand-in
    assert spent <= need["s"] * 1.65 * 1.05
    best = recommend(res["results"], Constraints())
    assert best.target == 360 and not best.ranked[0]["predicted"]


def test_after_the_winner_and_the_late_looks_the_race_goes_on_in_the_time_left(tmp_path, monkeypatch):
    """AG News at 1000, 38m: prompt search's first look did not fit round one beside the time held for
    the winner, so the race stopped; LoRA was measured at the target, prompt search's look was made
    late, and the compare ended with 13 of 38 minutes unused and six challengers predicted from one
    size. Once the winner is measured and the late looks made, the race goes on while its next run
    fits."""
    from adaptlab.compare.schedule import AdaptivePicker

    need = {"s": _planned_need(tmp_path, monkeypatch)}
    real_check = AdaptivePicker.check_budget

    def planned_dear(self):  # the plan's estimate of few-shot's first look does not fit round one
        real_check(self)
        self.first_est["few_shot"] = 1e3

    monkeypatch.setattr(AdaptivePicker, "check_budget", planned_dear)
    budget = need["s"] * 2
    res, race_file, spent = _compare(tmp_path, monkeypatch, 1.0, budget, "late")
    ran = res["finished"]
    target = next(i for i, r in enumerate(ran) if "-n360-" in r)
    assert not any(r.startswith("few_shot-") for r in ran[:target]), ran
    late = next(i for i, r in enumerate(ran) if r.startswith("few_shot-"))  # looked at after the winner
    assert late == target + 1, ran  # before any further promotion
    assert ran[late + 1 :], ran  # and the race went on in the time left
    assert spent <= budget * 1.05


def test_a_candidate_left_out_by_the_budget_check_is_looked_at_in_time_left_at_the_end(tmp_path, monkeypatch):
    """AG News at 500, 15m: the budget check left hybrid and prompt search out, the winner was
    measured at the target, and the compare ended with 2 of 15 minutes unused and prompt search (a
    90 s first look) never measured. Once the winner is measured, a left-out candidate's first look
    that fits the time left is made, and it is back in the race."""
    from adaptlab.compare.schedule import AdaptivePicker

    real_check = AdaptivePicker.check_budget

    def leave_out_few_shot(self):  # the budget check leaves few-shot out (its estimate then was dear)
        real_check(self)
        self.left_out = [
            {
                "candidate": "few_shot",
                "family": "prompt",
                "first_look_s": 1e3,
                "at_target_s": 1e3,
                "why": "the budget: zero_shot is the cheapest prompt candidate and stays",
            }
        ]
        self._apply_left_out()

    monkeypatch.setattr(AdaptivePicker, "check_budget", leave_out_few_shot)
    need = _planned_need(tmp_path, monkeypatch)
    monkeypatch.setattr(AdaptivePicker, "check_budget", leave_out_few_shot)
    res, race_file, spent = _compare(tmp_path, monkeypatch, 1.0, need * 2, "left")
    ran = res["finished"]
    target = next(i for i, r in enumerate(ran) if "-n360-" in r)
    assert not any(r.startswith("few_shot-") for r in ran[:target]), ran
    assert ran[target + 1].startswith("few_shot-"), ran  # the first thing after the winner's run
    assert race_file["left_out"] == [] and not any(n["strategy"] == "few_shot" for n in race_file["never_run"])
    assert spent <= need * 2 * 1.05


def test_a_prompt_candidate_is_first_looked_at_the_largest_size_that_costs_no_more(tmp_path):
    """Financial PhraseBank at 1000: prompt search's first look at 64 (its run costs the same at 256:
    it reads 80 train rows) left a band spanning most of the scale, and "prompt or train?" open. A
    first look goes to the largest size no dearer than the smallest: past the rows the strategy reads,
    that measurement is its prediction at the target. A trained candidate's cost grows with its rows:
    it stays at the smallest."""
    from adaptlab.compare.adaptive import race
    from adaptlab.compare.costs import Work
    from adaptlab.compare.record import RunSpec
    from adaptlab.compare.schedule import AdaptivePicker

    class Tokens:  # the work of a run: a prompt search's calls do not grow with the train size
        n_screen, n_test = 100, 400

        def work(self, strategy, n, rows):
            return Work(50.0 if strategy == "prompt_search" else 2.0 * n, rows * 1.0)

    specs = [RunSpec("zero_shot", 0, 0)] + [
        RunSpec(s, n, seed) for s in ("prompt_search", "lora") for n in (64, 256, 1000) for seed in (0, 1)
    ]
    picker = AdaptivePicker(_cfg(None), specs, tmp_path, Tokens())
    assert picker.first_look("prompt_search") == RunSpec("prompt_search", 256, 0)  # at 1000: every test row
    assert picker.first_look("lora") == RunSpec("lora", 64, 0)
    assert picker.first_look("zero_shot") == RunSpec("zero_shot", 0, 0)
    firsts = {c: picker.first_look(c).train_size for c in picker.candidates()}
    state = race([], specs, cost=picker.cost, first=firsts)
    assert sorted(s.id for s, _ in state.candidates) == ["lora-n64-s0", "prompt_search-n256-s0", "zero_shot-n0-s0"]
    # Measured there, past the 80 rows it reads, its prediction at 1000 is its measurement: flat.
    look = rec("prompt_search", 256, 0.40, right=[1] * 40 + [0] * 60)
    look["train"]["reads_rows_at_most"] = 80
    records = [
        rec("zero_shot", 0, 0.30, right=[1] * 30 + [0] * 70),
        look,
        rec("lora", 64, 0.70, right=[1] * 70 + [0] * 30),
        rec("lora", 1000, 0.85, right=[1] * 85 + [0] * 15),
    ]
    state = race(records, specs, first=firsts)
    assert state.fits["prompt_search"].flat_past == 80
    assert state.question["answer"] == "training" and state.question["decided"], state.question


def test_when_no_run_at_the_target_fits_the_time_held_for_it_goes_to_the_first_looks_left(tmp_path, monkeypatch):
    """Financial PhraseBank at 15m, its first looks measured 2x slower than estimated: every run at the
    target was re-estimated past what was left, and the compare ended after 3 runs with 11 of 15
    minutes unused, holding them for a run that could not be made. The time held is freed for the
    first looks not made (and then the race's runs), within the budget."""
    from adaptlab.compare.schedule import AdaptivePicker
    from adaptlab.strategies.registry import get_strategy

    need = _planned_need(tmp_path, monkeypatch)
    real_seconds = AdaptivePicker.seconds

    def dearer(self, spec):  # once runs are measured, a trained candidate's run at the target: 20x
        s = real_seconds(self, spec)
        trained = get_strategy(spec.strategy).kind == "gradient"
        return s * 20 if self._done and trained and spec.train_size == self.target else s

    monkeypatch.setattr(AdaptivePicker, "seconds", dearer)
    res, race_file, spent = _compare(tmp_path, monkeypatch, 0.7, need * 1.1, "slow")
    assert not any("-n360-" in r for r in res["finished"] if not r.startswith("few_shot")), res["finished"]
    assert {r.split("-")[0] for r in res["finished"]} == set(STRATEGIES), race_file["never_run"]
    assert spent <= need * 1.1 * 1.05


def test_a_first_look_cut_by_the_time_held_for_the_winner_is_tried_once_more(tmp_path, monkeypatch):
    """AG News at 500, 15m: few-shot's first look, limited by the time held for the winner to less
    than its estimate, was cut and never tried again, though the winner's run left time for it. A
    first look cut by the reserve (not by running past its own limit) is tried once more as a late
    look where the seconds it ran, and a margin, fit; cut a second time, it stays cut."""
    import adaptlab.compare.measure as measure
    from adaptlab.compare.schedule import AdaptivePicker
    from adaptlab.utils import TimeUp

    need = _planned_need(tmp_path, monkeypatch)
    limits: dict[str, float] = {}
    real_limit = AdaptivePicker.limit

    def limit(self, spec, guess, spent):
        # Round one's limit for few-shot's first look is what a reserve as large as AG News' (the
        # dearest run at the target, full fine-tuning's, held until a leader is known) leaves it:
        # twice its estimate, far under its own limit (three times, plus a minute).
        limits[spec.id] = real_limit(self, spec, guess, spent)
        if spec.strategy == "few_shot" and spec.id not in getattr(self, "retried", set()):
            limits[spec.id] = min(limits[spec.id], 2 * guess)
        return limits[spec.id]

    monkeypatch.setattr(AdaptivePicker, "limit", limit)

    def compare(name: str, cuts: int):
        clock = [0.0]
        _fake(monkeypatch, 1.0, clock)
        fake, tries = measure.run_one, {}

        def run_one(spec, *a, **k):  # few-shot's first look runs into its limit ``cuts`` times
            tries[spec.id] = tries.get(spec.id, 0) + 1
            if spec.strategy == "few_shot" and tries[spec.id] <= cuts:
                clock[0] += limits[spec.id]
                raise TimeUp("time limit reached")
            return fake(spec, *a, **k)

        monkeypatch.setattr(measure, "run_one", run_one)
        res = run_compare(_cfg(need * 1.6), tmp_path / name, progress=False, clock=lambda: clock[0])
        return res, json.loads((tmp_path / name / "race.json").read_text()), tries, clock[0]

    res, race_file, tries, spent = compare("once", 1)
    ran = res["finished"]
    few = [r for r in ran if r.startswith("few_shot-")]
    assert len(few) == 1 and tries[few[0]] == 2, (tries, ran)  # cut, then tried once more, and measured
    assert not any(n["strategy"] == "few_shot" for n in race_file["never_run"])
    target = next(i for i, r in enumerate(ran) if "-n360-" in r and not r.startswith("few_shot"))
    assert ran.index(few[0]) > target  # a late look, after the winner's run
    assert spent <= need * 1.6 * 1.05
    res, race_file, tries, _ = compare("twice", 2)
    assert not any(r.startswith("few_shot-") for r in res["finished"])  # cut again: stays cut
    assert max(n for r, n in tries.items() if r.startswith("few_shot-")) == 2, tries
    assert any(n["strategy"] == "few_shot" and "cut" in n["why"] for n in race_file["never_run"])


def test_a_first_look_is_not_started_short_of_its_estimate():
    """AG News at 500, 15m: few-shot's first look, estimated 103 s, was started with 85 s before the
    time held for the winner and cut at 93 s, its seconds spent for nothing. A first look starts only
    where its whole estimate fits; otherwise it waits for a late look."""
    from types import SimpleNamespace

    from adaptlab.compare.schedule import AdaptivePicker

    picker = AdaptivePicker.__new__(AdaptivePicker)
    picker.cfg = SimpleNamespace(budget_seconds=1000.0)
    picker.reserve = lambda done, but=None: 400.0
    spec = SimpleNamespace(id="few_shot-n64-s0")
    for estimate, starts in ((103.0, False), (85.0, True)):
        picker.seconds = lambda s, e=estimate: e
        assert picker._can_finish(spec, 515.0, {}) is starts  # 85 s left beside the reserve


def test_late_looks_take_the_side_that_does_not_lead_first():
    """Banking77 at 20m: LoRA led, hybrid's late look (the cheaper) took the time prompt search's
    needed, and "prompt or train?" stayed open. A late look from the side that does not lead comes
    first; where it does not fit, the next one is tried."""
    from types import SimpleNamespace

    from adaptlab.compare.record import RunSpec
    from adaptlab.compare.schedule import AdaptivePicker

    specs = [RunSpec("hybrid", 16, 0), RunSpec("prompt_search", 256, 0)]
    p = object.__new__(AdaptivePicker)
    p.left_out, p.released, p.squeezed, p.cut, p.skipped = [], False, {}, set(), []
    p.planned, p.specs, p.unfit = specs, list(specs), {s.id for s in specs}
    p.state = SimpleNamespace(leader="lora")
    p.first_look = lambda c, planned: next(s for s in planned if s.strategy == c)
    p.seconds = lambda spec: {"hybrid": 90.0, "prompt_search": 180.0}[spec.strategy]
    room = {"s": 300.0}
    p._fits = lambda spec, spent, done, guess=None: p.seconds(spec) <= room["s"]
    spec, why = p._late_look({}, 0.0)
    assert spec.strategy == "prompt_search" and "did not fit round one" in why
    room["s"] = 100.0  # the prompt's look does not fit: the cheaper one of the leading side does
    p.unfit = {s.id for s in specs}
    assert p._late_look({}, 0.0)[0].strategy == "hybrid"
    p.state = SimpleNamespace(leader="few_shot")  # a prompt leads: the trained candidate comes first
    room["s"] = 300.0
    p.unfit = {s.id for s in specs}
    assert p._late_look({}, 0.0)[0].strategy == "hybrid"


def test_a_candidate_whose_first_look_was_cut_does_not_hold_round_one_open(monkeypatch):
    """AG News at 500, 15m: prompt search's first look (at 256, no dearer than at 64) was cut by the
    time held for the winner. The race then offered its run at 64 as a first look, so round one never
    ended, no leader was named, and the time held for LoRA at 500 was freed as if no run at the target
    fitted. Until its late look, such a candidate's other sizes are not the race's to offer."""
    from types import SimpleNamespace

    import adaptlab.compare.schedule as schedule
    from adaptlab.compare.record import RunSpec

    specs = [RunSpec(st, n, 0) for st in ("lora", "prompt_search") for n in (64, 256, 500)]
    seen = {}
    monkeypatch.setattr(schedule, "race", lambda records, specs, **kw: seen.update(kw))
    p = object.__new__(schedule.AdaptivePicker)
    p.cfg = SimpleNamespace(confidence=0.95)
    p.specs, p.planned, p.unfit, p.order = specs, specs, set(), ["lora", "prompt_search"]
    p.cost = lambda spec: 1.0 if spec.strategy == "prompt_search" else float(spec.train_size)
    p.first_key = lambda: p.cost  # round one's order does not matter here
    p.cut = {"prompt_search-n256-s0", "prompt_search-n500-s0"}  # its first look, and the dearer sizes
    lora = rec("lora", 64, 0.87)
    p._race([lora])
    assert {"prompt_search-n64-s0", "prompt_search-n256-s0"} <= seen["exclude"]
    assert not any(i.startswith("lora-") for i in seen["exclude"])
    p.cut = set()  # its late look: back in the race
    p._race([lora])
    assert not seen["exclude"]


def test_round_one_looks_at_each_familys_cheapest_candidate_first(tmp_path, monkeypatch):
    """The demo at 30 s on the tiny model, cheapest first: the three prompt candidates ran first, their
    rates made every trained candidate's first look dearer than the time left, and no trained candidate
    was measured. Round one takes the cheapest candidate of each family first (those the budget check
    keeps), then the others; on a machine slower than estimated both sides are still measured."""
    res, _, _ = _compare(tmp_path, monkeypatch, 1.0, 1e6, "all")
    first = [r.split("-")[0] for r in res["finished"][: len(STRATEGIES)]]
    assert set(first[:4]) == {"zero_shot", "soft_prompt", "lora", "full"} and first[4] == "few_shot", first
    need = _planned_need(tmp_path, monkeypatch)
    res, race_file, _ = _compare(tmp_path, monkeypatch, 0.3, need, "slow")
    ran = {r.split("-")[0] for r in res["finished"]}
    assert ran < set(STRATEGIES) and ran & {"zero_shot", "few_shot"} and ran & {"soft_prompt", "lora", "full"}
    assert all("budget" in n["why"] for n in race_file["never_run"]), race_file["never_run"]


def test_a_race_out_of_runs_because_first_looks_did_not_fit_says_so():
    """The demo at 30 s: the trained candidates' first looks, re-estimated, could not finish in the time
    left, so the race had nothing left to run; it said "no run left in the plan could decide it ...
    more seeds would settle it", and each of them "not needed to decide". The line names the budget."""
    from types import SimpleNamespace

    from adaptlab.compare.adaptive import decision_line

    state = SimpleNamespace(
        leader="zero_shot",
        p_best={"zero_shot": 0.23},
        alive=["zero_shot", "few_shot"],
        sure=False,
        decided=True,
        calibration_run=None,
        confidence=0.95,
        question=None,
    )
    line = decision_line(state, 3, 0.4, 3, never=["soft_prompt", "lora"])
    assert "the budget ended before every candidate had a first look (soft_prompt, lora did not)" in line
    assert "more seeds" not in line and "few_shot within the noise" in line
