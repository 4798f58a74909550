"""Running one job in a worker process, the same way in every executor.

Both executors (in-process and the Ray actors) run a job through :class:`JobRunner`, so a
measured cost means the same wherever it was measured:

* torch runs the job with as many intra-op threads as the job reserves CPUs (1 by
  default), never the machine's default, and a job's cost is the CPU time of its threads
  (or its device time on a GPU: :mod:`raytda.core.costs`), so a cost measured in-process
  equals one measured on a Ray worker holding the same reservation, whatever else runs
  on the node: nothing waits for a job to be timed alone;
* every artifact's meta says where and on what it was measured: ``resources`` (e.g.
  ``"cpu x1"`` or ``"cpu x1 + GPU x0.25"``), ``worker``, ``node_id``, ``pid``, and
  ``loads``: what this worker process loaded or built so far (task data, model weights
  read from the store, projections built) and how often it reused them;
* model weights read from the store are kept per process (content-addressed artifacts
  never change), so the Q and block jobs of one model that land on the worker that
  trained or loaded it do not read it again;
* the process's caches (kept models, kept projections) follow the running job's
  ``ComputeArgs`` memory budget, which the Ray executor has divided among a node's actors;
* a job runs under a lease on its key (:mod:`raytda.store.lease`), so of several sweeps
  on one store one computes it; the others run other jobs meanwhile (:meth:`JobRunner.try_run`,
  which both executors use) or, with nothing else to do, wait for it; every record it writes names
  its ``inputs`` (the job's dependencies) or its ``owner`` (the job, for score chunks and
  block parts), which ``raytda store gc|verify`` follow;
* a job that raises removes what it wrote before it failed (its score chunks, block
  parts), so the store holds only whole artifacts; the error goes on to the executor.
"""

from __future__ import annotations

import gc
import logging
import os
import platform
from collections import Counter, OrderedDict
from typing import Any

from raytda.core.args import ComputeArgs
from raytda.plan.job import Job
from raytda.store import ArtifactStore
from raytda.store.lease import BUILT, HELD, Lease, claim, try_claim

log = logging.getLogger(__name__)


def warm_up() -> None:
    """Pay a process's one-off costs before any job is timed: the job bodies' imports and
    torch's first autograd pass and optimizer step (lazy kernels, thread pools, BLAS).
    Every executor calls it once per worker process, so no first job is charged for it."""
    _warm_up()
    # The imports (torch, pandas, ray, ...) leave some 400k objects to Python's cyclic
    # collector, whose next full pass would land in some job's timed section: 0.22 s
    # here, more than a small training takes. Collect once now and keep what is left out
    # of later passes (it is freed by reference counting as before, only never scanned
    # for cycles again).
    gc.collect()
    gc.freeze()


def _warm_up() -> None:
    import torch

    import raytda.core.grads  # noqa: F401
    import raytda.core.trak  # noqa: F401
    import raytda.work.evaluate  # noqa: F401
    import raytda.work.serve  # noqa: F401
    import raytda.work.train  # noqa: F401
    from raytda.core.args import torch_threads

    with torch_threads(1):
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.zeros(4).long())
        loss.backward()
        opt.step()
        torch.func.vmap(lambda x: x @ x.T)(torch.randn(2, 3, 3))
        # The CPU GEMM backend is chosen by timing both once per process and thread
        # count; choosing it here keeps that out of the first projection's cost.
        from raytda.core import gemm

        gemm.resolve("auto")


def resources_label(cpus: float, accel_share: float = 0.0, accel: str = "GPU") -> str:
    """What a job held while measured, e.g. ``"cpu x1"`` or ``"cpu x1 + GPU x0.25"``."""
    out = f"cpu x{cpus:g}"
    return out + (f" + {accel} x{accel_share:g}" if accel_share > 0 else "")


def job_cpus(job: Job) -> int:
    """CPUs the job reserves, which is also its torch thread count (at least 1)."""
    return max(1, int(round(float(job.resources().get("num_cpus", 1)))))


class _Recording:
    """A store view for one job: model reads come from the process's cache, and every
    ``put`` carries the worker's context in its meta. Everything else is the store's."""

    def __init__(self, store: ArtifactStore, runner: JobRunner, context: dict[str, Any],
                 job: Job) -> None:
        self._store, self._runner, self._context, self._job = store, runner, context, job
        # model weights this job reads, which the worker keeps for later jobs
        self._models = {d.key for d in job.deps() if d.holds_model}
        # the artifacts it stores under their own keys (a pack: each member's)
        self._own = {j.key: j for j in job.stored_jobs()}
        self.written: list[str] = []  # keys this job put, removed again if it fails

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def __reduce__(self):  # a job that ships its store on pickles the real one
        return (_identity, (self._store,))

    def get(self, key: str):
        if key in self._models:
            return self._runner.model_get(self._store, key)
        return self._store.get(key)

    def put(self, key: str, tensors, meta: dict[str, Any], spec=None) -> None:
        own = self._own.get(key)
        self.written.append(key)
        self._store.put(key, tensors, {**meta, **self._context, "loads": self._runner.loads()},
                        spec, inputs=[d.key for d in own.deps()] if own is not None else None,
                        owner=None if own is not None else self._job.key)

    def discard_written(self) -> None:
        """Remove what this job wrote (its parts, e.g. score chunks, and its own record):
        a job that failed leaves nothing half-done in the store. A pack keeps the members
        it stored whole (a later sub-pack failed): each is an artifact by itself. Best
        effort: the store may be what failed."""
        whole = set(self._own) if len(self._own) > 1 else set()
        for key in reversed(self.written):
            if key in whole:
                continue
            try:
                self._store.delete(key)
            except OSError:
                log.debug("could not remove %s of a failed job", key, exc_info=True)
        self.written.clear()


def _identity(x: Any) -> Any:
    return x


class JobRunner:
    """Per-process state of a worker: the model cache and the load counters."""

    def __init__(self, worker: str = "local", node_id: str | None = None,
                 model_cache_bytes: int = ComputeArgs().model_cache_bytes) -> None:
        self.worker = worker
        self.node_id = node_id or platform.node()
        self.counts: Counter[str] = Counter()
        self.models: OrderedDict[str, tuple[dict, dict]] = OrderedDict()
        self.model_bytes = 0
        self.model_cache_bytes = model_cache_bytes
        self._data_key: str | None = None  # the running job's task, until its data is seen
        self._warm = False

    def model_get(self, store: ArtifactStore, key: str):
        if key in self.models:
            self.models.move_to_end(key)
            self.counts["model_hits"] += 1
            return self.models[key]
        out = store.get(key)  # a corrupt payload raises here and is never kept
        self.counts["model_loads"] += 1
        size = sum(t.numel() * t.element_size() for t in out[0].values())
        if size <= self.model_cache_bytes:
            self.models[key] = out
            self.model_bytes += size
            self.trim_models()
        return out

    def trim_models(self) -> None:
        """Drop least recently used models until the kept ones fit the cache budget."""
        while self.model_bytes > self.model_cache_bytes and self.models:
            _, (old, _) = self.models.popitem(last=False)
            self.model_bytes -= sum(t.numel() * t.element_size() for t in old.values())

    def follow_budget(self, args: ComputeArgs) -> None:
        """Size this process's caches to the running job's memory budget."""
        from raytda.core import projector_cache

        if args.model_cache_bytes != self.model_cache_bytes:
            self.model_cache_bytes = args.model_cache_bytes
            self.trim_models()
        if projector_cache.budget() != args.projector_cache_bytes:
            projector_cache.set_budget(args.projector_cache_bytes)

    def loads(self) -> dict[str, int]:
        """Loads and reuses of this worker process so far (cumulative)."""
        from raytda.core import projector_cache
        from raytda.tasks import cache

        if self._data_key is not None and self._data_key in cache._CACHE:
            self.counts["data_loads"] += 1  # loaded by the running job, counted once
            self._data_key = None
        return {"jobs": int(self.counts["jobs"]), "data_loads": int(self.counts["data_loads"]),
                "model_loads": int(self.counts["model_loads"]),
                "model_hits": int(self.counts["model_hits"]), **projector_cache.stats()}

    def run(self, job: Job, store: ArtifactStore, args: ComputeArgs,
            accel_share: float = 0.0, accel: str = "GPU") -> bool:
        """Run ``job`` with torch threads = its CPU reservation, recording its context,
        under a lease on its key. False, computing nothing, when the artifact is there
        already or another sweep holding the lease built it while this one waited."""
        lease = claim(store, job.key, lambda: store.has(job.key) and job.complete(store))
        if lease is None:
            return False
        with lease:
            self._run(job, store, args, accel_share, accel)
        return True

    def try_run(self, job: Job, store: ArtifactStore, args: ComputeArgs,
                accel_share: float = 0.0, accel: str = "GPU") -> str:
        """As :meth:`run`, but never waiting for another sweep's lease: ``"ran"``,
        ``"cached"`` (the artifact is there, nothing computed) or ``"leased"`` (a live
        sweep holds its lease; nothing computed, try another job)."""
        got = try_claim(store, job.key, lambda: store.has(job.key) and job.complete(store))
        if got == BUILT:
            return "cached"
        if got == HELD:
            return "leased"
        assert isinstance(got, Lease)
        with got:
            self._run(job, store, args, accel_share, accel)
        return "ran"

    def run_each(self, job: Job, store: ArtifactStore, args: ComputeArgs,
                 accel_share: float = 0.0, accel: str = "GPU",
                 wait: bool = False) -> dict[str, str]:
        """As :meth:`try_run` (``wait``: :meth:`run`) for a job that stores several
        artifacts (a pack's members, :meth:`Job.stored_jobs`), each under a lease on its
        own key, so a pack and another sweep training some of the same models alone or
        in another pack never compute one twice: it computes those it could claim
        (:meth:`Job.narrowed`). Each key's status: ``"ran"``, ``"cached"`` or
        ``"leased"``. Leases are claimed in key order, so two waiting sweeps never hold
        each other's."""
        status: dict[str, str] = {}
        leases: list[Lease] = []
        try:
            for m in sorted(job.stored_jobs(), key=lambda m: m.key):
                def built(m: Job = m) -> bool:
                    return store.has(m.key) and m.complete(store)

                got: Lease | str | None = claim(store, m.key, built) if wait \
                    else try_claim(store, m.key, built)
                if isinstance(got, Lease):
                    leases.append(got)
                status[m.key] = "ran" if isinstance(got, Lease) else \
                    "leased" if got == HELD else "cached"
            if leases:
                mine = job.narrowed({lease.key for lease in leases})
                self._run(mine, store, args, accel_share, accel)
        finally:
            for lease in leases:
                lease.release()
        return status

    def _run(self, job: Job, store: ArtifactStore, args: ComputeArgs, accel_share: float,
             accel: str) -> None:
        from raytda.core.args import torch_threads
        from raytda.tasks import cache

        if not self._warm:
            warm_up()
            self._warm = True
        self.follow_budget(args)
        cpus = job_cpus(job)
        if accel_share <= 0 and args.device.startswith("cuda"):
            accel_share = 1.0  # a whole device, e.g. the in-process executor on CUDA
        context = {"resources": resources_label(cpus, accel_share, accel),
                   "worker": self.worker, "node_id": self.node_id, "pid": os.getpid()}
        self._data_key = None if job.task.key in cache._CACHE else job.task.key
        self.counts["jobs"] += 1
        view = _Recording(store, self, context, job)
        gc.collect()  # earlier jobs' garbage, collected before this one's clock starts
        with torch_threads(cpus):
            try:
                job.run(view, args)  # type: ignore[arg-type]
            except Exception:
                # An interrupt (KeyboardInterrupt, SIGTERM) is not caught: what a stopped
                # job finished stays for the rerun. A job that raised would raise again.
                view.discard_written()
                raise
            finally:
                self.loads()
                self._data_key = None
