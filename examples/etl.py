"""Python steps of the etl-daily example: a small, self-contained extract-transform-load."""

import datetime
import random


def fetch(context):
    rows = int(context.input.get("rows", 20))
    day = context.input.get("date") or datetime.date.today().isoformat()
    rng = random.Random(day)
    records = [
        {
            "id": i,
            "day": day,
            "amount": round(rng.uniform(-5, 100), 2),
            "region": rng.choice("NESW"),
        }
        for i in range(rows)
    ]
    print(f"fetched {len(records)} records for {day}")
    return {"records": records}


def transform(context):
    records = context.steps["fetch"]["outputs"]["records"]
    out = [{**r, "amount_cents": int(r["amount"] * 100)} for r in records]
    return {"records": out}


def validate(context):
    records = context.steps["transform"]["outputs"]["records"]
    valid = [r for r in records if r["amount_cents"] >= 0]
    print(f"{len(valid)} of {len(records)} records valid")
    return {"records": valid, "valid_rows": len(valid), "rejected_rows": len(records) - len(valid)}
