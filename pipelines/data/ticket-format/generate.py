#!/usr/bin/env python3
"""Generates the ticket-format demo dataset: free-text orders -> `TICKET|name|item|quantity|city`.

Deterministic (seeded), standard library only. Every completion field is copied verbatim from its prompt, so the
task is learnable from a few hundred examples, while the base model cannot guess the exact format zero-shot.

    python3 pipelines/data/ticket-format/generate.py            # rewrites train.jsonl and holdout.jsonl here
    python3 pipelines/data/ticket-format/generate.py --check    # fails if the committed files differ
"""

import argparse
import json
import random
import sys
from pathlib import Path

SEED = 20241126
TRAIN_RECORDS = 400
HOLDOUT_RECORDS = 40

FIRST_NAMES = [
    "Maria", "James", "Aiko", "Lucas", "Fatima", "Olivia", "Chen", "Noah", "Priya", "Elena", "Mateo", "Sofia",
    "Kwame", "Hannah", "Ivan", "Amara", "Liam", "Yuki", "Omar", "Clara", "Diego", "Ingrid", "Ravi", "Zoe",
    "Tomas", "Leila", "Arjun", "Nina", "Felix", "Ines",
]
LAST_NAMES = [
    "Lopez", "Smith", "Tanaka", "Moreau", "Haddad", "Brown", "Wei", "Garcia", "Patel", "Rossi", "Fernandez",
    "Novak", "Mensah", "Schmidt", "Petrov", "Okafor", "Murphy", "Sato", "Khalil", "Dubois", "Silva", "Larsen",
    "Iyer", "Clarke", "Horvat", "Nasser", "Kapoor", "Weber", "Jansen", "Costa",
]
COLORS = ["blue", "red", "green", "black", "white", "yellow", "grey", "orange", "purple", "pink"]
OBJECTS = [
    "mug", "notebook", "umbrella", "backpack", "lamp", "scarf", "water bottle", "desk chair", "phone case",
    "candle", "teapot", "towel", "pillow", "wallet", "keyboard", "plant pot", "jacket", "cap",
]
CITIES = [
    "Lyon", "Berlin", "Osaka", "Toronto", "Lisbon", "Nairobi", "Austin", "Prague", "Melbourne", "Seoul",
    "Madrid", "Oslo", "Dublin", "Chennai", "Quito", "Porto", "Vienna", "Denver", "Accra", "Kyoto",
    "Bristol", "Marseille", "Hamburg", "Bogota",
]
TEMPLATES = [
    "Order from {name}: {qty} x {item}, ship to {city}.",
    "Please send {qty} x {item} to {city}. Customer: {name}.",
    "Hi, this is {name}. I'd like {qty} of the {item}, delivered to {city} please.",
    "Ship to {city}: {item} (qty {qty}) for {name}.",
    "New order - customer {name}, item {item}, quantity {qty}, destination {city}.",
    "{name} ordered {qty} x {item}. Deliver to {city}.",
    "Can you get {qty} x {item} to {city}? It's for {name}.",
    "Customer {name} in {city} needs {qty} x {item}.",
    "{qty} x {item} for {name}, shipping address in {city}.",
    "Hello! {name} here, please ship {qty} x {item} to my place in {city}. Thanks!",
]


def make_record(rng: random.Random) -> dict:
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    item = f"{rng.choice(COLORS)} {rng.choice(OBJECTS)}"
    qty = rng.randint(1, 12)
    city = rng.choice(CITIES)
    prompt = rng.choice(TEMPLATES).format(name=name, item=item, qty=qty, city=city)
    return {"prompt": prompt, "completion": f"TICKET|{name}|{item}|{qty}|{city}"}


def generate() -> tuple[list[dict], list[dict]]:
    rng = random.Random(SEED)
    seen_prompts: set[str] = set()
    records: list[dict] = []
    while len(records) < TRAIN_RECORDS + HOLDOUT_RECORDS:
        record = make_record(rng)
        if record["prompt"] in seen_prompts:
            continue
        seen_prompts.add(record["prompt"])
        records.append(record)
    return records[:TRAIN_RECORDS], records[TRAIN_RECORDS:]


def to_jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the files on disk differ from the output")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    train, holdout = generate()
    outputs = {here / "train.jsonl": to_jsonl(train), here / "holdout.jsonl": to_jsonl(holdout)}
    if args.check:
        stale = [path.name for path, text in outputs.items() if not path.exists() or path.read_text() != text]
        if stale:
            print(f"stale: {', '.join(stale)}; run: python3 {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        path.write_text(text)
    print(f"wrote {len(train)} train and {len(holdout)} holdout records to {here}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
