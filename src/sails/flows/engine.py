"""The dispatch loop behind ``sails run`` and the Prefect flows.

It recovers dead or expired leases, then keeps up to N stages running: each is claimed in
the catalog first (the claim is the lock, so two engines never run the same stage), run by
:func:`sails.stages.execute.run_claimed`, and recorded. Transient failures are requeued with
exponential backoff up to ``execution.max_attempts``; data errors are not retried. The loop
ends when nothing in scope is runnable and nothing is running. Another process holding the
catalog past its busy timeout (``execution.catalog_busy_seconds``) makes the loop wait and
carry on, never end or dispatch twice.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from sails.catalog import StageRow, check_stage, new_owner
from sails.catalog.sources import SourceStageRow
from sails.errors import CatalogBusyError, LeaseLostError
from sails.execution.slots import CPU_SLOTS, OWN_SLOT, SlotLease, SlotPool
from sails.ids import mous_uri
from sails.pipeline import PIPELINE, Pool
from sails.qa.stale import mark_stale
from sails.stages.execute import StageReport, run_claimed, warm_up_local
from sails.stages.sizing import claim_admitted, requeue_disk_full
from sails.stages.source_run import claim_source, requeue_row, run_source_claimed

BUSY_WAIT_S = 1.0  # between tries while another process holds the catalog


def patiently(call: Callable[[], list], stop: threading.Event | None = None) -> list:
    """``call()``, retried while another process holds the catalog (an empty list if told
    to stop meanwhile)."""
    while True:
        try:
            return call()
        except CatalogBusyError:
            if stop is not None and stop.is_set():
                return []
            time.sleep(BUSY_WAIT_S)


def stages_until(until: str | None) -> list[str]:
    """The stages a run may start: all of the table's, or those up to ``until``."""
    if until is None:
        return list(PIPELINE.names)
    return list(PIPELINE.until(check_stage(until)))


def pool_slots(settings, slots: int, allowed: list[str]) -> dict[str, tuple[int, list[str]]]:
    """Pool name -> (its slots, the stages drawing from it). With
    ``execution.separate_pools`` downloads have ``download.parallel_mous`` slots of their own
    (a download waits on the network: it must not hold a CASA slot), every other stage the
    ``slots`` CASA slots; without it one pool of ``slots`` serves every stage."""
    if not settings.execution.separate_pools:
        return {"all": (slots, list(allowed))}
    out = {}
    for pool, n in ((Pool.NETWORK, settings.download.parallel_mous), (Pool.CPU, slots)):
        names = PIPELINE.in_pool(pool, allowed)
        if names:
            out[str(pool)] = (n, names)
    return out


def retry_delay(settings, attempts: int) -> float:
    """Exponential backoff before retrying a transient failure, capped."""
    ex = settings.execution
    return min(ex.retry_backoff_max_seconds,
               ex.retry_backoff_seconds * (2 ** max(0, attempts - 1)))


@dataclass
class RunSummary:
    reports: list[StageReport] = field(default_factory=list)
    wall_s: float = 0.0
    job_wall_s: float = 0.0  # sum of the CASA job processes' wall times
    job_inner_s: float = 0.0  # sum of the CASA jobs' self-measured wall times
    recovered: int = 0
    stale: int = 0  # rows sent back to pending because their target's overrides changed
    regrouped: list[str] = field(default_factory=list)  # source changes ("M83: members ...")
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ran(self) -> int:
        return len(self.reports)

    @property
    def failed(self) -> int:
        """Stages that ended failed (or lost their lease) in this run: a non-zero exit. A
        transient failure retried to success in the same run does not count."""
        last = {(type(r.row), r.row.id): r for r in self.reports}
        return sum(r.status in ("failed", "lost") for r in last.values())


def regroup_at_start(project, stop: threading.Event | None = None) -> list[str]:
    """Regroup the sources before dispatching (MOUS may have been ingested, rules edited),
    so a source's membership is current before anything of it runs."""
    rules = project.settings.sources.rules()
    done = patiently(lambda: [project.catalog.regroup_sources(rules)], stop)
    return [f"{c.name}: {c.reason}" for r in done for c in r.changes]


def _scope_counts(project, mous: list[str] | None) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for row in project.catalog.stages():
        if mous and row.mous_id not in mous:
            continue
        out.setdefault(row.stage, {}).setdefault(row.status, 0)
        out[row.stage][row.status] += 1
    for srow in project.catalog.source_stages():  # source rows (sails.catalog.sources)
        out.setdefault(srow["stage"], {}).setdefault(srow["status"], 0)
        out[srow["stage"]][srow["status"]] += 1
    return out


def _holding(lease: SlotLease, runner: Callable, *args):
    """``runner(*args)`` with ``lease`` as the stage's own slot (:func:`release_own`)."""
    OWN_SLOT.set(lease)
    return runner(*args)


def run_pipeline(
    project,
    *,
    mous: Iterable[str] | None = None,
    until: str | None = None,
    max_parallel: int | None = None,
    backend: str | None = None,
    on_event: Callable[[str, StageRow | StageReport], None] | None = None,
    stop: threading.Event | None = None,
    run_stage: Callable[..., StageReport] = run_claimed,
) -> RunSummary:
    """Process everything runnable in scope; return when idle."""
    settings = project.settings
    catalog = project.catalog
    mous_list = [mous_uri(m) for m in mous] if mous else None
    if mous_list:
        for m in mous_list:
            catalog.mous(m)  # clear error for an unknown MOUS
    allowed = stages_until(until)
    slots = max_parallel or settings.execution.effective_slots()
    owner = new_owner("run")
    lease = settings.execution.lease_seconds
    summary = RunSummary()
    t0 = time.time()
    summary.recovered = (len(patiently(catalog.recover_dead_owners, stop))
                         + len(patiently(catalog.recover_expired, stop))
                         + len(patiently(catalog.recover_source_leases, stop)))
    summary.stale = len(mark_stale(project, mous_list))  # overrides.toml changed
    summary.regrouped = regroup_at_start(project, stop)
    requeue_disk_full(project, mous_list)
    warm_up_local(project, allowed, mous_list, backend)
    retry_at: dict[StageRow | SourceStageRow, float] = {}
    running: dict[Future, StageRow] = {}
    pools = pool_slots(settings, slots, allowed)
    # Per pool, the slots in use; stages borrow free CPU slots for their extra jobs (chunks).
    slot_pools = {name: SlotPool(n) for name, (n, _) in pools.items()}
    # (no CPU pool when only downloads are in scope: nothing borrows from it then)
    cpu_pool = slot_pools.get("cpu") or slot_pools.get("all") or SlotPool(slots)
    token = CPU_SLOTS.set(cpu_pool)
    held: dict[Future, SlotLease] = {}  # each running stage's slot
    # Done when a stage gives its slot back early (its CASA work is over): the loop then
    # starts the next stage in it at once rather than at its next 1 s round.
    wake: list[Future] = [Future()]

    def wake_up() -> None:
        if not wake[0].done():
            wake[0].set_result(None)
    notify = on_event or (lambda kind, obj: None)
    workers = sum(n for n, _ in pools.values())  # threads; CASA processes are bounded by slots
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stage") as pool:
        while True:
            now = time.time()
            for failed, when in list(retry_at.items()):
                if when <= now:
                    try:
                        requeue_row(catalog, failed, owner, "retrying after a transient failure")
                    except CatalogBusyError:
                        continue  # the catalog is held by another process: next round
                    del retry_at[failed]
            busy = False
            for pname, (_n, names) in pools.items():
                slots_of = slot_pools[pname]
                while not (stop and stop.is_set()) and slots_of.try_acquire():
                    try:
                        row = claim_admitted(project, owner, lease, stages=names,
                                             mous=mous_list)
                        if row is None and pname != str(Pool.NETWORK):  # source rows
                            row = claim_source(project, owner, lease, names, mous_list)
                    except CatalogBusyError:  # another process holds the catalog: wait
                        slots_of.release()
                        busy = True
                        break
                    if row is None:
                        slots_of.release()
                        break
                    notify("started", row)
                    # Each stage runs in a copy of this context (Prefect's flow-run context
                    # rides along when the engine runs inside a flow).
                    ctx = contextvars.copy_context()
                    runner = (run_source_claimed if isinstance(row, SourceStageRow)
                              else run_stage)
                    slot = SlotLease(slots_of, wake_up)
                    fut = pool.submit(ctx.run, _holding, slot, runner, project, row, owner,
                                      backend)
                    running[fut] = row
                    held[fut] = slot
            if not running:
                if busy and not (stop and stop.is_set()):
                    time.sleep(BUSY_WAIT_S)
                    continue
                if retry_at and not (stop and stop.is_set()):
                    time.sleep(max(0.05, min(retry_at.values()) - time.time()))
                    continue
                break
            done, _ = wait([*running, wake[0]], timeout=1.0, return_when=FIRST_COMPLETED)
            if wake[0].done():
                wake[0] = Future()
            for fut in done:
                if fut not in running:  # the wake-up
                    continue
                row = running.pop(fut)
                held.pop(fut).release()  # unless the stage gave it back already
                try:
                    report = fut.result()
                except (LeaseLostError, CatalogBusyError) as exc:  # recovery requeues it
                    report = StageReport(row, "lost", exc.one_line())
                summary.reports.append(report)
                summary.job_wall_s += report.job_wall_s
                summary.job_inner_s += report.job_inner_s
                notify("finished", report)
                attempts = report.row.attempts
                if report.transient and attempts < settings.execution.max_attempts:
                    retry_at[report.row] = time.time() + retry_delay(settings, attempts)
    CPU_SLOTS.reset(token)
    summary.wall_s = time.time() - t0
    summary.counts = _scope_counts(project, mous_list)
    return summary
