"""The embedded demo task: support-ticket intents for *Fernhill Home*, a fictional smart-home company.

Written by this module, deterministically (``random.Random(seed)``), and committed under
``adaptlab/data/demo/`` so that the demo needs no download; ``tests/data/test_demo.py`` checks
that the committed files are exactly what this code writes.

Why it makes prompting and fine-tuning differ: half of the 12 intents are generic (any model
knows what "cancel my order" means), the other half depend on facts only Fernhill knows. Its
hub is called *Hearth* and its ring pulses amber with error F-17 when offline; its plans are
*Sapling/Grove/Forest* under the *Canopy* subscription; *Acorns* are loyalty points; *Warden*
is the camera; *Lantern* bulbs blink three times in pairing mode; *Rootline* is the priority
human call-back line. Many tickets describe only the symptom ("the ring on the box by my router
went amber"), so a base model reading the label names cannot map them, while a few dozen
labelled examples teach the mapping.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from adaptlab.data.loading import Example, TaskData
from adaptlab.utils import atomic_write_text

SEED = 20261122
PER_INTENT = 50
SPLIT_SIZES = {"train": 30, "dev": 10, "test": 10}  # per intent

LABEL_DESCRIPTIONS: dict[str, str] = {
    "order_status": "where an order or delivery is",
    "cancel_order": "cancel an order that has not shipped",
    "refund_request": "money back for a returned or faulty item",
    "update_address": "change the delivery or billing address",
    "reset_password": "cannot log in, password or account access",
    "payment_declined": "a card or payment was rejected at checkout",
    "hearth_offline": "the Hearth hub lost its connection (amber ring, error F-17)",
    "canopy_plan_change": "switch between the Sapling, Grove and Forest subscription plans",
    "acorn_rewards": "balance or redemption of Acorn loyalty points",
    "warden_false_alarm": "the Warden camera sends motion alerts for nothing",
    "lantern_pairing": "add or pair Lantern smart bulbs",
    "rootline_callback": "ask for a call back from a human on the Rootline priority line",
}

_SLOTS: dict[str, list[str]] = {
    "order": ["order", "package", "parcel", "delivery", "shipment"],
    "num": ["FH-20417", "FH-38815", "FH-11902", "FH-57320", "FH-90244", "FH-66031", "#48213", "#77104"],
    "days": ["three days", "a week", "two weeks", "10 days", "5 days", "ages"],
    "item": ["thermostat", "door sensor", "smart plug", "camera", "hub", "bulb pack", "doorbell", "leak sensor"],
    "city": ["Leeds", "Bristol", "Denver", "Austin", "Lyon", "Porto", "Dublin", "Oslo"],
    "card": ["visa", "mastercard", "amex", "debit card", "credit card"],
    "tier_from": ["Sapling", "Grove", "Forest"],
    "tier_to": ["Sapling", "Grove", "Forest"],
    "room": ["kitchen", "bedroom", "hallway", "living room", "garage", "office", "porch"],
    "n": ["2", "3", "4", "6"],
    "time": ["3am", "midnight", "every night", "all afternoon", "every 5 minutes", "constantly"],
    "thing": ["the cat", "a spider", "the curtains", "tree shadows", "car headlights", "the heater"],
}

_TEMPLATES: dict[str, list[str]] = {
    "order_status": [
        "where is my {order}?",
        "my {order} {num} still hasn't arrived",
        "can you tell me when {num} will be delivered",
        "it's been {days} and no sign of my {order}",
        "tracking for {num} hasn't updated in {days}",
        "has my {item} shipped yet?",
        "what's the delivery date for my {item}",
        "is my {order} lost? ordered {days} ago",
        "I need an update on {order} {num}",
        "when will the {item} I ordered get here",
    ],
    "cancel_order": [
        "please cancel order {num}",
        "I want to cancel the {item} I just ordered",
        "cancel my {order} before it ships",
        "ordered the wrong {item}, can you cancel it",
        "stop order {num}, I changed my mind",
        "how do I cancel an order I placed today",
        "I no longer need the {item}, cancel please",
        "cancel {num} and don't charge me",
        "can I still cancel if it hasn't shipped",
    ],
    "refund_request": [
        "I returned the {item} {days} ago and still no refund",
        "I want my money back for the broken {item}",
        "refund for order {num} please",
        "the {item} arrived damaged, I'd like a refund",
        "how long do refunds take after a return",
        "you charged me for a {item} I sent back",
        "still waiting on the refund for {num}",
        "can I get a refund instead of a replacement {item}",
    ],
    "update_address": [
        "I moved to {city}, please update my address",
        "change the delivery address for {num}",
        "wrong shipping address on my {order}, it should go to {city}",
        "how do I edit my billing address",
        "update my address before {num} ships",
        "my new address is in {city}, can you change it",
        "need to change where my {item} gets delivered",
        "please fix the postcode on my account",
    ],
    "reset_password": [
        "I forgot my password",
        "can't log in to my account",
        "the reset email never arrives",
        "locked out of the app after too many attempts",
        "how do I change my password",
        "my login says invalid credentials but the password is right",
        "password reset link expired",
        "I can't sign in on my new phone",
        "two factor code isn't working and I can't get in",
    ],
    "payment_declined": [
        "my {card} keeps getting declined",
        "payment failed at checkout for the {item}",
        "why was my {card} rejected",
        "checkout says payment unsuccessful",
        "tried paying twice and it was declined both times",
        "your site won't accept my {card}",
        "order {num} failed because the payment didn't go through",
        "card declined but my bank says it's fine",
    ],
    "hearth_offline": [
        "my Hearth is offline",
        "the ring on my hub is pulsing amber",
        "Hearth shows error F-17",
        "the light on the box next to my router turned amber",
        "app says my hub is unreachable since {time}",
        "everything in the {room} stopped responding, the hub ring is orange",
        "getting F-17 on the app",
        "hearth lost wifi again",
        "the little hub keeps blinking amber and nothing works",
        "all my devices say offline and the hub ring is yellow-orange",
        "error code F17 on the hub",
    ],
    "canopy_plan_change": [
        "I want to move from {tier_from} to {tier_to}",
        "upgrade me to the Forest plan",
        "switch my Canopy plan to {tier_to}",
        "downgrade to Sapling please, Grove is too much",
        "what's the difference between Grove and Forest",
        "can I change my subscription tier mid month",
        "I'm on {tier_from}, how do I get {tier_to}",
        "my plan should be {tier_to} now not {tier_from}",
        "I only need the cheapest plan now",
        "does Forest include more cameras than Grove",
    ],
    "acorn_rewards": [
        "how many acorns do I have",
        "redeem my acorns on the {item}",
        "my acorns didn't show up after order {num}",
        "do acorns expire",
        "I should have earned acorns for the {item}",
        "can I use my points at checkout",
        "where do I see my rewards balance",
        "my acorn balance went to zero",
        "how do I spend my acorns",
    ],
    "warden_false_alarm": [
        "Warden keeps sending motion alerts at {time}",
        "my camera pings me because of {thing}",
        "false alarms from the Warden in the {room}",
        "getting motion notifications {time} and nobody is there",
        "the {room} camera alerts on {thing}",
        "how do I stop Warden alerting for {thing}",
        "warden says motion detected {time} but it's empty",
        "too many alerts from my cam {time}",
    ],
    "lantern_pairing": [
        "my new lanterns won't pair",
        "how do I add {n} more bulbs to the {room}",
        "the bulb blinks three times and then nothing",
        "Lantern not showing up in the app",
        "set up the lanterns in my {room}",
        "bulb keeps flashing 3 times, what now",
        "pairing mode for the Lantern",
        "I bought {n} bulbs, how do I connect them",
        "lantern stuck blinking",
    ],
    "rootline_callback": [
        "I want a human to call me back",
        "please put me on Rootline",
        "can someone phone me instead of chat",
        "I'm a Forest member, request a call back",
        "get me a real person on the phone",
        "call me back about order {num}",
        "Rootline call back please, chat isn't helping",
        "I'd rather talk to an agent by phone",
        "schedule a call with support",
    ],
}

_PREFIXES = ["", "", "", "", "hi, ", "hello, ", "hey team, ", "urgent: ", "quick question: "]
_SUFFIXES = ["", "", "", "", " thanks", " thank you!", " asap", " please help", "??"]


def _fill(template: str, rng: random.Random) -> str:
    out = template
    while "{" in out:
        start = out.index("{")
        end = out.index("}", start)
        slot = out[start + 1 : end]
        out = out[:start] + rng.choice(_SLOTS[slot]) + out[end + 1 :]
    return out


def _variant(text: str, rng: random.Random) -> str:
    text = rng.choice(_PREFIXES) + text + rng.choice(_SUFFIXES)
    r = rng.random()
    if r < 0.15:
        text = text.lower()
    elif r < 0.25:
        text = text.rstrip("?!.")
    elif r < 0.60:
        text = text[:1].upper() + text[1:]
    return text.strip()


def by_intent(make, split_sizes: dict[str, int], per_intent: int, rng: random.Random, what: str) -> dict[str, list]:
    """For every intent, ``per_intent`` rows with distinct keys from ``make(label, rng) -> (key, row)``,
    cut into the splits in the proportions of ``split_sizes``, each split then shuffled."""
    seen: set[str] = set()
    splits: dict[str, list] = {k: [] for k in split_sizes}
    scale = per_intent / sum(split_sizes.values())
    for label in LABEL_DESCRIPTIONS:
        rows: list = []
        attempts = 0
        while len(rows) < per_intent:
            attempts += 1
            if attempts > 200 * per_intent:
                raise RuntimeError(f"{what} generator cannot make {per_intent} distinct rows for {label}")
            key, row = make(label, rng)
            if key.lower() not in seen:
                seen.add(key.lower())
                rows.append(row)
        start = 0
        for name, size in split_sizes.items():
            k = round(size * scale)
            splits[name].extend(rows[start : start + k])
            start += k
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def generate(seed: int = SEED, per_intent: int = PER_INTENT) -> dict[str, list[Example]]:
    """Return ``{"train": [...], "dev": [...], "test": [...]}``; the same seed gives the same rows."""

    def ticket(label: str, rng: random.Random):
        t = _variant(_fill(rng.choice(_TEMPLATES[label]), rng), rng)
        return t, Example(text=t, label=label)

    return by_intent(ticket, SPLIT_SIZES, per_intent, random.Random(seed), "demo")


def write(out_dir: str | Path, seed: int = SEED) -> Path:
    """Write ``train/dev/test.jsonl``, ``labels.json`` and ``descriptions.json`` into ``out_dir``."""
    out = Path(out_dir)
    for name, rows in generate(seed).items():
        body = "".join(json.dumps({"text": ex.text, "label": ex.label}, ensure_ascii=False) + "\n" for ex in rows)
        atomic_write_text(out / f"{name}.jsonl", body)
    atomic_write_text(out / "labels.json", json.dumps(list(LABEL_DESCRIPTIONS), indent=1) + "\n")
    atomic_write_text(out / "descriptions.json", json.dumps(LABEL_DESCRIPTIONS, indent=1) + "\n")
    return out


def as_task_data(split: str = "train", seed: int = SEED) -> TaskData:
    rows = generate(seed)[split]
    return TaskData(task="classification", examples=rows, source=f"demo[{split}]", label_names=list(LABEL_DESCRIPTIONS))


if __name__ == "__main__":  # python -m adaptlab.data.demo  (rewrites the committed files)
    print(write(Path(__file__).resolve().parent / "demo"))
