"""A worker process for the concurrency tests: claim and complete until nothing is left.

Usage: python claim_worker.py CATALOG OUT_FILE LEASE_SECONDS [HOLD_SECONDS]
Writes one claimed stage id per line to OUT_FILE (flushed), so a killed worker's claims
are still known. HOLD_SECONDS > 0 makes it sleep while holding each lease (to be killed).
"""

import sys
import time

from sails.catalog import Catalog, Product, new_owner


def main() -> None:
    path, out, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
    hold = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    cat = Catalog(path)
    owner = new_owner("test")
    with open(out, "a") as fh:
        while True:
            row = cat.claim_next(owner, lease_seconds=lease, stages=["download"])
            if row is None:
                break
            fh.write(f"{row.id}\n")
            fh.flush()
            if hold:
                time.sleep(hold)
            cat.complete(row.id, owner, [Product("file", f"/done/{row.id}", bytes=1)])


if __name__ == "__main__":
    main()
