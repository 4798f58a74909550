"""Attribution for new inputs from a finished ensemble, without recomputing its train side.

A finished configuration's store holds, per feature member, the member's train side
(projected train features Phi and the Cholesky factor of Phi^T Phi + ridge I) and, per Q
member, Q on the train set. An :class:`Attributor` loads those once, with the member
networks, their dropout masks and their projections (same seeds as the sweep's own
member jobs), and then scores any new inputs: per member the projected gradient features
of the inputs, scored against the stored train side, mean over members, times mean Q.
That is the batch path's math (:mod:`raytda.work.evaluate`), so a test input attributed
here gets the score the sweep stored for it.

Example::

    sweep = Sweep("mnist-mlp", ensembles=["dropout:I=1,D=10"], lds=None, store="runs/s")
    sweep.run()
    attr = Attributor.from_sweep(sweep, "dropout:I=1,D=10")
    s = attr.scores(x_new, y_new)        # (len(x_new), n_train)
    best = attr.top_k(x_new, y_new, k=10)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from raytda.core import trak as trak_core
from raytda.core.args import ComputeArgs
from raytda.core.grads import n_trainable
from raytda.core.masks import MaskSpec
from raytda.core.network import Network
from raytda.core.projection import GaussianProjector
from raytda.core.sparse_input import SparseInputProjection
from raytda.data.samples import TensorSamples
from raytda.plan.jobs import Evaluate, MemberBlock, projection_seed
from raytda.specs import SpecError
from raytda.store import ArtifactStore
from raytda.work.serve import load_member, member_mask, warm_member_imports

if TYPE_CHECKING:
    from raytda.api import Sweep
    from raytda.ensembles import Ensemble
    from raytda.methods import Method
    from raytda.task import Task

DEFAULT_MEMORY_BYTES = 2 << 30


@dataclass(frozen=True)
class TopK:
    """The k most positive (proponents) and most negative (opponents) train samples per
    input: indices into the train set, and their scores, each (n_inputs, k), best first."""

    proponents: torch.Tensor
    proponent_scores: torch.Tensor
    opponents: torch.Tensor
    opponent_scores: torch.Tensor


@dataclass
class _Member:
    """One feature member as the Attributor holds it."""

    block: MemberBlock
    net: Network
    mask: MaskSpec | None
    projector: GaussianProjector
    train_side: dict[str, torch.Tensor]  # solved: (Phi^T Phi + ridge I)^-1 Phi^T (k, n)
    p_bytes: int  # bytes of its projection matrix when resident
    sparse: SparseInputProjection | None = None  # the zero-input path, when resident


def _tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class Attributor:
    """Scores new inputs against a finished ensemble configuration's stored train side.

    ``evaluate`` is the configuration (``sweep.evaluation(...)``); it must have run in
    ``store`` and its method must serve new inputs (``serves_new_inputs``: TRAK). Member
    networks, masks, train sides and mean Q are loaded once, onto ``device``. Projection
    matrices are generated from the members' seeds and kept resident while they fit
    ``memory_bytes`` together (least recently used ones give way to a member used in a
    later call; a member that does not fit is regenerated in each call: same numbers,
    slower). ``compute`` sets batch sizes, the CPU GEMM and the zero-input path as for the
    sweep (its device is replaced by ``device``).
    """

    def __init__(self, store: ArtifactStore | str, evaluate: Evaluate, device: str = "cpu",
                 memory_bytes: int = DEFAULT_MEMORY_BYTES,
                 compute: ComputeArgs | None = None) -> None:
        from dataclasses import replace

        self.store = store if isinstance(store, ArtifactStore) else ArtifactStore(store)
        self.evaluate = evaluate
        self.impl = evaluate.method.impl
        if not type(self.impl).serves_new_inputs:
            raise SpecError(
                f"method {evaluate.method.name!r} cannot attribute new inputs from stored "
                f"payloads: only methods that store a member's train side do (TRAK). "
                f"Grad-Dot, Grad-Cos and IF need the full train gradients, which are not stored")
        if memory_bytes < 0:
            raise ValueError(f"memory_bytes must be >= 0, got {memory_bytes}")
        self._check_ran()
        self.device = torch.device(device)
        self.memory_bytes = int(memory_bytes)
        self.args = replace(compute or ComputeArgs(), device=str(self.device))
        self.task: Task = evaluate.task
        self.output = self.task.output()
        self._calls = 0
        self._resident: OrderedDict[int, int] = OrderedDict()  # member -> last call used
        self.members: list[_Member] = [self._load(b) for b in evaluate.blocks()]
        self.n_train = int(self.members[0].train_side["solved"].shape[1])
        self.q_mean: torch.Tensor | None = None
        if self.impl.needs_q:
            qs = [self.store.get(q.key)[0]["q"].double() for q in evaluate.qvalues()]
            self.q_mean = torch.stack(qs).mean(0).to(self.device)
        # Materialize projections now (in member order) while they fit the budget.
        for e in range(len(self.members)):
            self._acquire(e)

    @classmethod
    def from_sweep(cls, sweep: Sweep, ensemble: str | Ensemble, method: str | Method | None = None,
                   task: str | Task | None = None, device: str = "cpu",
                   memory_bytes: int = DEFAULT_MEMORY_BYTES,
                   compute: ComputeArgs | None = None) -> Attributor:
        """The Attributor of one finished configuration of ``sweep`` (as ``sweep.scores``
        names it), reading ``sweep``'s store; ``compute`` defaults to the sweep's."""
        ev = sweep.evaluation(ensemble, method, task)
        return cls(sweep.store, ev, device, memory_bytes, compute or sweep.compute)

    # ------------------------------------------------------------------ loading

    def _check_ran(self) -> None:
        ev, store = self.evaluate, self.store
        if not store.has(ev.key) or not ev.complete(store):
            raise SpecError(f"{ev.describe()} has not run in store {store.uri}: run its sweep "
                            f"first (Sweep.run()), then build the Attributor")
        missing = [j.describe() for j in (*ev.blocks(), *ev.qvalues()) if not store.has(j.key)]
        if missing:
            raise SpecError(f"{ev.describe()} ran, but store {store.uri} no longer holds "
                            f"{len(missing)} of its member artifacts ({missing[0]}, ...): "
                            f"run the sweep again to restore them")

    def _load(self, block: MemberBlock) -> _Member:
        warm_member_imports(block.model)
        net = load_member(self.store, block.model, block.member).to(self.device)
        mask = member_mask(net, block.model, block.member, block.mask_mode)
        payload, _ = self.store.get(block.key)
        # TRAK's score_rows is phi (Phi^T Phi + ridge I)^-1 Phi^T in float64, solved per call;
        # the solve against the stored train side, (Phi^T Phi + ridge I)^-1 Phi^T (k, n), is
        # done once here, so a call is one product (the same math, other rounding order).
        phi = payload["train_features"].to(self.device, torch.float64)
        side = {"solved": torch.cholesky_solve(phi.T.contiguous(),
                                               payload["chol"].to(self.device))}
        del phi
        k = int(side["solved"].shape[0])
        n = n_trainable(net)
        p_bytes = n * k * 4
        # Resident (P generated once) when P fits the budget alone, else streamed within it.
        budget = max(self.memory_bytes, 4096 * k * 4)
        projector = GaussianProjector(n, k, projection_seed(block.model, block.member),
                                      budget, self.device, cpu_gemm=self.args.cpu_gemm)
        return _Member(block, net, mask, projector, side, p_bytes)

    def _materialize(self, m: _Member) -> None:
        # The same projection path as the member job: the zero-input one when it applies.
        m.sparse = trak_core.sparse_for(m.net, m.projector, self.task.data(), self.args)
        if m.sparse is None:
            m.projector.materialize()

    def _release(self, m: _Member) -> None:
        m.sparse = None
        m.projector._full = None

    def _acquire(self, e: int) -> bool:
        """Make member e's projection resident if the budget allows; whether it is."""
        m = self.members[e]
        if e in self._resident:
            self._resident[e] = self._calls
            self._resident.move_to_end(e)
            return True
        if not m.projector.resident or m.p_bytes > self.memory_bytes:
            return False
        held = sum(self.members[i].p_bytes for i in self._resident)
        # Least recently used first, but never one already used in this call.
        for old in [i for i, c in self._resident.items() if c < self._calls]:
            if held + m.p_bytes <= self.memory_bytes:
                break
            self._release(self.members[old])
            del self._resident[old]
            held -= self.members[old].p_bytes
        if held + m.p_bytes > self.memory_bytes:
            return False
        self._materialize(m)
        self._resident[e] = self._calls
        return True

    # ------------------------------------------------------------------ scoring

    @property
    def n_members(self) -> int:
        return len(self.members)

    @property
    def resident_members(self) -> int:
        """How many members' projection matrices are held now."""
        return len(self._resident)

    @property
    def resident_bytes(self) -> int:
        """Bytes held now: member networks, projection matrices, train sides and mean Q."""
        return self.memory()["total"]

    def memory(self) -> dict[str, int]:
        """``resident_bytes`` by part: networks, projections, train_sides, q, and total."""
        nets = sum(_tensor_bytes([*m.net.parameters(), *m.net.buffers()]) for m in self.members)
        proj = 0
        for m in self.members:
            if m.sparse is not None:
                proj += _tensor_bytes([m.sparse.p_grouped])
            if m.projector._full is not None:
                proj += _tensor_bytes([m.projector._full])
            if m.projector._scratch is not None:
                proj += _tensor_bytes([m.projector._scratch])
        sides = sum(_tensor_bytes(m.train_side.values()) for m in self.members)
        q = 0 if self.q_mean is None else _tensor_bytes([self.q_mean])
        return {"networks": nets, "projections": proj, "train_sides": sides, "q": q,
                "total": nets + proj + sides + q}

    def features(self, e: int, x: torch.Tensor, y: torch.Tensor, split: str = "test",
                 start: int = 0) -> torch.Tensor:
        """Member e's projected gradient features (len(x), k) of inputs (x, y), with its
        masks for rows ``start``.. of ``split``."""
        m = self.members[e]
        kept = self._acquire(e)
        if not kept:  # transient: regenerate what the member job used, then drop it
            self._materialize(m)
        try:
            return trak_core.project_features(m.net, TensorSamples(x, y), m.projector, m.mask,
                                              split, self.args, m.sparse, self.output, start)
        finally:
            if not kept:
                self._release(m)

    def scores(self, x: torch.Tensor, y: torch.Tensor, split: str = "test", start: int = 0
               ) -> torch.Tensor:
        """Ensemble scores (len(x), n_train) of new inputs, as float32 on the CPU.

        Per-sample dropout masks are keyed by (``split``, ``start`` + row): with
        ``split="test", start=i`` the rows get the masks of test rows i, i+1, ..., so
        stored test inputs get exactly the scores the sweep stored for them.
        """
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        self._calls += 1
        acc = torch.zeros(x.shape[0], self.n_train, dtype=torch.float64, device=self.device)
        for e, m in enumerate(self.members):
            feats = self.features(e, x, y, split, start).to(self.device, torch.float64)
            # a member's block in float32, accumulated in float64, as the batch path does
            acc += (feats @ m.train_side["solved"]).float().double()
        return self.impl.combine(acc / len(self.members), self.q_mean).float().cpu()

    def top_k(self, x: torch.Tensor, y: torch.Tensor, k: int = 10, split: str = "test",
              start: int = 0) -> TopK:
        """The k strongest proponents and opponents in the train set of each input."""
        if not 1 <= k <= self.n_train:
            raise ValueError(f"k must be in [1, {self.n_train}], got {k}")
        s = self.scores(x, y, split, start)
        top = torch.topk(s, k, dim=1, largest=True)
        low = torch.topk(s, k, dim=1, largest=False)
        return TopK(top.indices, top.values, low.indices, low.values)

    def __repr__(self) -> str:
        ev = self.evaluate
        return (f"<Attributor {ev.method.name} {ev.ensemble.label} on {ev.task.name}: "
                f"{self.n_members} members, {self.resident_members} projections resident, "
                f"{self.device}>")
