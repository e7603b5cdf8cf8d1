"""A relying party's backend making tickets at a steady rate with the limits the server ships
with, as a new operator would run it: every answer must be 201, and the phone (scanning every
50th ticket) must show the person's address and browser that the backend passed.

    .venv/bin/python -m bench.soak_backend --db sqlite --minutes 10 --rate 10

Prints one JSON line: tickets made, the rate kept, the statuses seen, how many scans showed a
requester other than the one passed. Not a speed figure: a soak test of issue 14's "a backend
creating tickets at 10 a second for ten minutes meets no 429".
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from qr_oidc.provider.settings import DEFAULTS

from conftest import phone_app
from helpers import Provider, sign_in_phone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=10.0, help="tickets a second")
    args = parser.parse_args()
    limits = {f"QR_OIDC_{k}": str(v) for k, v in DEFAULTS.items() if k.startswith("RATE_")}
    server = Provider(Path(tempfile.mkdtemp(prefix="qr-oidc-soak-")), limits, backend=args.db)
    server.start()
    try:
        shop = server.create_client("--name", "Busy shop")
        server.create_user("pat", "pat-password", name="Pat")
        phone = sign_in_phone(server, phone_app(server), "pat", "pat-password")["access_token"]
        statuses: dict[int, int] = {}
        scanned = wrong = made = 0
        start = time.monotonic()
        while time.monotonic() - start < args.minutes * 60:
            time.sleep(max(0.0, start + made / args.rate - time.monotonic()))
            ip = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
            agent = f"Mozilla/5.0 Firefox/{random.randrange(100, 141)}.0 #{made}"
            answer = server.create_ticket(shop, requester_ip=ip, requester_user_agent=agent)
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            if answer.status_code == 201 and made % 50 == 0:
                code = answer.json()["qr_content"].rsplit("/", 1)[1]
                shown = server.phone("scan", phone, scan_code=code).json()["requester"]
                scanned += 1
                wrong += shown != {"ip": ip, "user_agent": agent}
            made += 1
        elapsed = time.monotonic() - start
        print(json.dumps({"db": args.db, "tickets": made, "seconds": round(elapsed, 1),
                          "rate_per_s": round(made / elapsed, 2), "statuses": statuses,
                          "scanned": scanned, "phone_showed_another_requester": wrong}))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
