"""The demo shop's support data as multi-turn chats: *Fernhill Home*'s assistant in the house style.

Written by this module, deterministically (``random.Random(seed)``), and committed under
``adaptlab/data/demo_chat/`` (named ``demo-chat``); ``tests/data/test_demo.py`` checks that the
committed files are exactly what this code writes. OpenAI's fine-tuning format: one
``{"messages": [...]}`` per line, the last turn the assistant's.

What a model has to learn here, beyond answering: the house rules. The assistant greets with the
customer's issue named back, asks for the order number before it acts on anything about an order
(and only then acts), uses Fernhill's own names (Hearth, Canopy, Acorns, Warden, Lantern,
Rootline) and their fixes, and ends every answer with "— Fernhill Support". Conversations are
1 to 3 user turns; a third of them end on the turn where the number has just been given, so the
last answer depends on the whole conversation.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from adaptlab.data.demo import _SLOTS, _TEMPLATES, _fill, _variant, by_intent
from adaptlab.data.loading import Example, TaskData
from adaptlab.utils import atomic_write_text

SEED = 20261127
PER_INTENT = 25
SPLIT_SIZES = {"train": 15, "dev": 5, "test": 5}  # per intent
SIGN = " — Fernhill Support"
SYSTEM = (
    "You are Fernhill Home's support assistant. Be brief and friendly, ask for the order number "
    "before acting on an order, and sign every answer."
)
NEEDS_ORDER = {"order_status", "cancel_order", "refund_request", "update_address"}

# What the assistant does once it can act (the order number, where one is needed, is filled in).
ACTIONS: dict[str, list[str]] = {
    "order_status": [
        "Order {num} left our warehouse yesterday and should reach you within 2 working days.",
        "I can see {num}: it is with the courier and due tomorrow.",
    ],
    "cancel_order": [
        "Done: order {num} is cancelled and you will not be charged.",
        "I have cancelled {num} before it shipped; the hold on your card drops within 3 days.",
    ],
    "refund_request": [
        "I have started the refund for {num}; it reaches your card in 5 to 7 working days.",
        "Refund for {num} approved. You will get an email when the money is on its way.",
    ],
    "update_address": [
        "The address on {num} is updated; the courier will use the new one.",
        "Changed: {num} now goes to your new address.",
    ],
    "reset_password": [
        "I have sent a reset link to your email; it works for 30 minutes. Check spam if it is not there.",
        "Please use 'Forgot password' in the app; if no email arrives in 5 minutes I can reset it here.",
    ],
    "payment_declined": [
        "Declines usually come from the bank's fraud check. Try once more, or pay with Acorns plus another card.",
        "Nothing is charged on a declined payment. Please check the billing address matches your card, then try again.",
    ],
    "hearth_offline": [
        "An amber ring (error F-17) means Hearth lost Wi-Fi: unplug it for 10 seconds, then hold the "
        "ring until it turns white.",
        "Error F-17 is Hearth offline. Restart your router, then Hearth; the ring turns white when it is back.",
    ],
    "canopy_plan_change": [
        "You can switch Canopy plans in the app under Plan; Sapling, Grove and Forest change from your next bill.",
        "Plan changes take effect on your next Canopy bill. Forest adds cameras and Rootline call-backs.",
    ],
    "acorn_rewards": [
        "Your Acorns are in the app under Rewards; 100 Acorns take 1 off at checkout and never expire.",
        "Acorns land 48 hours after delivery. Spend them at checkout with 'Use Acorns'.",
    ],
    "warden_false_alarm": [
        "Lower Warden's motion sensitivity in the app, or draw an activity zone that leaves out what moves.",
        "Set an activity zone for that Warden so it ignores the area with the movement.",
    ],
    "lantern_pairing": [
        "Three blinks means the Lantern is in pairing mode: open Devices, tap Add, choose Lantern.",
        "Switch the bulb off and on 5 times until it blinks three times, then add it in the app.",
    ],
    "rootline_callback": [
        "I have booked a Rootline call-back; a specialist will phone you within 2 hours.",
        "You are on the Rootline list: expect a call today between 9 and 5.",
    ],
}
ASK = [
    "Sorry to hear that. Could you give me your order number?",
    "I can help with that. What is your order number?",
    "Happy to look into it. Which order number is it?",
]
THANKS = ["thanks!", "great, thank you", "ok cheers", "perfect"]
CLOSERS = ["You're welcome! Anything else, just ask.", "Glad I could help. Have a good day!"]


def _conversation(label: str, rng: random.Random) -> tuple[str, list[dict]]:
    first = _variant(_fill(rng.choice(_TEMPLATES[label]), rng), rng)
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": first}]
    num = rng.choice(_SLOTS["num"])
    action = rng.choice(ACTIONS[label]).format(num=num)
    if label in NEEDS_ORDER:
        msgs += [
            {"role": "assistant", "content": rng.choice(ASK) + SIGN},
            {"role": "user", "content": rng.choice(["it's ", "", "order ", "number is "]) + num},
        ]
    msgs.append({"role": "assistant", "content": action + SIGN})
    if rng.random() < 0.3:  # a closing exchange: the answer is the closer, given the whole chat
        msgs += [
            {"role": "user", "content": rng.choice(THANKS)},
            {"role": "assistant", "content": rng.choice(CLOSERS) + SIGN},
        ]
    return first, msgs


def generate(seed: int = SEED, per_intent: int = PER_INTENT) -> dict[str, list[list[dict]]]:
    """``{"train": [...], "dev": [...], "test": [...]}`` of conversations; the same seed, the same rows."""
    return by_intent(_conversation, SPLIT_SIZES, per_intent, random.Random(seed), "demo-chat")


def write(out_dir: str | Path, seed: int = SEED) -> Path:
    """Write ``train/dev/test.jsonl`` (OpenAI's chat fine-tuning format) into ``out_dir``."""
    out = Path(out_dir)
    for name, rows in generate(seed).items():
        body = "".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in rows)
        atomic_write_text(out / f"{name}.jsonl", body)
    return out


def as_task_data(split: str = "train", seed: int = SEED) -> TaskData:
    rows = [Example(text=json.dumps(m[:-1], ensure_ascii=False), label=m[-1]["content"]) for m in generate(seed)[split]]
    return TaskData(
        task="chat", examples=rows, source=f"demo-chat[{split}]", text_field="messages", label_field="messages"
    )


if __name__ == "__main__":  # python -m adaptlab.data.demo_chat  (rewrites the committed files)
    print(write(Path(__file__).resolve().parent / "demo_chat"))
