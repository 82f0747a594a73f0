"""Write the demo seed CSVs deterministically (stdlib only, fixed random seed).

Run from dbt_models/: python scripts/generate_seeds.py, and commit the CSVs it writes.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from pathlib import Path

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
rng = random.Random(20261123)

FIRST = ["ada", "grace", "alan", "edsger", "barbara", "ken", "dennis", "linus", "margaret",
         "john", "radia", "tim", "frances", "donald", "leslie", "shafi", "judea", "yann"]
LAST = ["lovelace", "hopper", "turing", "dijkstra", "liskov", "thompson", "ritchie", "torvalds",
        "hamilton", "backus", "perlman", "berners", "allen", "knuth", "lamport", "goldwasser"]
INDUSTRY = ["software", "retail", "finance", "health", "media", "logistics"]
CITY = ["Berlin", "Lisbon", "Austin", "Toronto", "Nairobi", "Osaka", "Lyon", None]
PLAN = ["free", "free", "free", "pro", "pro", "enterprise"]
BASE = dt.datetime(2025, 1, 1, 9, 0, 0)


def ts(days: float) -> str:
    return (BASE + dt.timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")


def write(name: str, header: list[str], rows: list[list[object]]) -> None:
    with (SEEDS / f"{name}.csv").open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(["" if v is None else v for v in r] for r in rows)


accounts = []
for i in range(1, 31):
    word = rng.choice(["acme", "globex", "initech", "umbrella", "hooli", "vandelay", "stark"])
    accounts.append([i, f"{word.title()} {i}", f"{word}{i}.example.com", rng.choice(INDUSTRY),
                     ts(rng.uniform(0, 60))])
write("raw_accounts", ["account_id", "name", "domain", "industry", "created_at"], accounts)

users = []
for i in range(1, 201):
    first, last = rng.choice(FIRST), rng.choice(LAST)
    signup = rng.uniform(60, 300)
    users.append([i, rng.randint(1, 30), f"{first}.{last}.{i}@example.com", first.title(),
                  last.title(), rng.choice(PLAN), f"{rng.uniform(0, 5000):.2f}",
                  "false" if rng.random() < 0.1 else "true", ts(signup),
                  ts(signup + rng.uniform(0, 60)), rng.choice(CITY)])
write("raw_users", ["user_id", "account_id", "email", "first_name", "last_name", "plan", "ltv",
                    "is_active", "signup_at", "updated_at", "last_login_city"], users)

orders, items = [], []
SKUS = [("SKU-TEE", 19.0), ("SKU-MUG", 9.5), ("SKU-CAP", 14.0), ("SKU-BAG", 39.9), ("SKU-PEN", 2.5)]
for o in range(1, 401):
    orders.append([o, rng.randint(1, 200), ts(rng.uniform(300, 360)),
                   rng.choice(["paid", "paid", "shipped", "refunded"])])
    for line in range(1, rng.randint(1, 4) + 1):
        sku, price = rng.choice(SKUS)
        items.append([o, line, sku, rng.randint(1, 5), f"{price:.2f}"])
write("raw_orders", ["order_id", "user_id", "ordered_at", "status"], orders)
write("raw_order_items", ["order_id", "line_no", "sku", "quantity", "unit_price"], items)
