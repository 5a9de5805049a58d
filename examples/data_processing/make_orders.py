"""Write orders.csv, the sample data of the data-processing recipe, deterministically.

    python examples/data_processing/make_orders.py

The same seed always writes the same file: 320 orders from January to March, with a
few planted anomalies for the `process` step to flag (a negative quantity, a price far
above the list price, a total that does not match quantity x price, a missing region,
a duplicated order id).
"""

from __future__ import annotations

import csv
import datetime
import random
from pathlib import Path

ROWS = 320
SEED = 20240314
PRODUCTS = {  # product -> list price in euros
    "frozen peas 2.5kg": 6.40,
    "sweetcorn 2kg": 5.90,
    "spinach portions 1kg": 4.75,
    "mixed berries 1kg": 8.20,
    "chips 5kg": 9.80,
    "broad beans 2kg": 6.10,
}
REGIONS = ("north", "south", "east", "west")
CHANNELS = ("wholesale", "retail", "online")
# Row number (1-based, as split_rows counts them) -> the anomaly planted there.
ANOMALIES = {
    23: "negative_units",
    88: "price_outlier",
    141: "total_mismatch",
    197: "missing_region",
    256: "duplicate_id",
    301: "price_outlier",
}


def orders(rng: random.Random) -> list[dict[str, str]]:
    start = datetime.date(2024, 1, 2)
    rows: list[dict[str, str]] = []
    for number in range(1, ROWS + 1):
        product = rng.choice(sorted(PRODUCTS))
        price = round(PRODUCTS[product] * rng.uniform(0.95, 1.05), 2)
        units = rng.randint(4, 120)
        row = {
            "order_id": f"A{10000 + number}",
            "date": (start + datetime.timedelta(days=(number - 1) * 90 // ROWS)).isoformat(),
            "region": rng.choice(REGIONS),
            "channel": rng.choice(CHANNELS),
            "product": product,
            "units": str(units),
            "unit_price_eur": f"{price:.2f}",
            "total_eur": f"{units * price:.2f}",
        }
        anomaly = ANOMALIES.get(number)
        if anomaly == "negative_units":
            row["units"] = str(-units)
            row["total_eur"] = f"{-units * price:.2f}"
        elif anomaly == "price_outlier":
            row["unit_price_eur"] = f"{price * 10:.2f}"
            row["total_eur"] = f"{units * price * 10:.2f}"
        elif anomaly == "total_mismatch":
            row["total_eur"] = f"{units * price + 100:.2f}"
        elif anomaly == "missing_region":
            row["region"] = ""
        elif anomaly == "duplicate_id":
            row["order_id"] = rows[-1]["order_id"]
        rows.append(row)
    return rows


def main() -> None:
    path = Path(__file__).with_name("orders.csv")
    rows = orders(random.Random(SEED))
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
