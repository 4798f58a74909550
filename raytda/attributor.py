"""Attribution for new inputs from a finished ensemble, without recomputing its train side.

A finished configuration's store holds, per feature member, the member's payload (for
TRAK its train side: projected train features Phi and the Cholesky factor of
Phi^T Phi + ridge I) and, per Q member, Q on the train set. An :class:`Attributor` loads
those once, with the member networks, their dropout masks and their featurizers (same
seeds and gradient features as the sweep's own member jobs), and then scores any new
inputs: per member the method scores the inputs' features against what it keeps of the
payload (``AttributionMethod.query_side`` / ``score_features``), then the mean over
members is combined with the mean Q. That is the batch path's math
(:mod:`raytda.work.evaluate`), so a test input attributed here gets the score the sweep
stored for it. It works for every ensemble kind, whatever jobs stored its members
(``KindJobs.parts``), and every method that ``serves_new_inputs``. A member whose train
side was stored in row shards (:mod:`raytda.plan.shards`) keeps only its reduced payload;
its shards are read per call, kept while they fit ``compute.payload_cache_bytes``.

Example::

    sweep = Sweep("mnist-mlp", ensembles=["dropout:I=1,D=10"], lds=None, store="runs/s")
    sweep.run()
    attr = Attributor.from_sweep(sweep, "dropout:I=1,D=10")
    s = attr.scores(x_new, y_new)        # (len(x_new), n_train)
    best = attr.top_k(x_new, y_new, k=10)

A task with dict rows (tokenizer output) takes new inputs as such rows too, of any length,
without targets when its collate makes them (a causal LM's labels from its ids)::

    rows = [{"input_ids": [5, 9, 2], "attention_mask": [1, 1, 1]}, {"input_ids": [7, 1]}]
    s = attr.scores(rows)                # padded by the task's own collate

Each row is checked first (:mod:`raytda.data.token_rows`: ids within the vocabulary, a mask
as long as the ids, ...), so a bad row is one SpecError line naming it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from raytda.core.args import ComputeArgs
from raytda.core.masks import MaskSpec
from raytda.core.network import Network
from raytda.data.samples import TensorSamples
from raytda.data.token_rows import RowSchema, is_rows
from raytda.features import Featurizer
from raytda.plan.evaluate import Evaluate
from raytda.plan.job import FeaturePart
from raytda.plan.members import MemberBlock
from raytda.specs import SpecError
from raytda.store import ArtifactStore
from raytda.work.evaluate import PayloadCache
from raytda.work.serve import (
    declared_inputs,
    load_member,
    member_context,
    member_mask,
    warm_member_imports,
)
from raytda.work.shards import Shard, stored_shards

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

    part: FeaturePart
    net: Network
    mask: MaskSpec | None
    featurizer: Featurizer
    side: dict[str, torch.Tensor]  # what the method keeps of the stored payload
    shards: list[Shard] | None = None  # train shards read per call (None: side whole)


def _tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class Attributor:
    """Scores new inputs against a finished ensemble configuration's stored members.

    ``evaluate`` is the configuration (``sweep.evaluation(...)``); it must have run in
    ``store`` and its method must serve new inputs (``serves_new_inputs``: TRAK). Member
    networks, masks, what the method keeps of each payload and mean Q are loaded once,
    onto ``device``. What featurizers keep between calls (projection matrices) is held
    while it fits ``memory_bytes`` for all members together (least recently used ones
    give way to a member used in a later call; a member that does not fit rebuilds it in
    each call: same numbers, slower). ``compute`` sets batch sizes, the CPU GEMM and the
    zero-input path as for the sweep (its device is replaced by ``device``).
    """

    def __init__(self, store: ArtifactStore | str, evaluate: Evaluate, device: str = "cpu",
                 memory_bytes: int = DEFAULT_MEMORY_BYTES,
                 compute: ComputeArgs | None = None) -> None:
        from dataclasses import replace

        self.store = store if isinstance(store, ArtifactStore) else ArtifactStore(store)
        self.evaluate = evaluate
        self.method = evaluate.method
        self.impl = evaluate.method.impl
        if not type(self.impl).serves_new_inputs:
            raise SpecError(
                f"method {evaluate.method.name!r} cannot attribute new inputs from stored "
                f"payloads: only methods that store a member's train side do (TRAK). "
                f"Grad-Dot, Grad-Cos and IF need the full train gradients, which are not stored")
        if memory_bytes < 0:
            raise SpecError(f"memory_bytes must be >= 0, got {memory_bytes}")
        self._check_ran()
        self.device = torch.device(device)
        self.memory_bytes = int(memory_bytes)
        # A projection streams within the budget when it does not fit it whole.
        self.args = replace(compute or ComputeArgs(), device=str(self.device),
                            proj_memory_bytes=max(1, self.memory_bytes))
        self.task: Task = evaluate.task
        self._calls = 0
        self._resident: OrderedDict[int, int] = OrderedDict()  # member -> last call used
        self._shards = PayloadCache(self.store, self.args.payload_cache_bytes)
        self._row_schema: RowSchema | None = None
        self.members: list[_Member] = [self._load(p) for p in evaluate.needs.parts()]
        first = self.members[0]
        self.n_train = (first.shards[-1][1] if first.shards
                        else self.impl.n_train(first.side))
        self.q_mean: torch.Tensor | None = None
        if evaluate.needs.q:
            qs = [self.store.get(q.stored_key(self.store))[0]["q"].double()
                  for q in evaluate.needs.q]
            self.q_mean = torch.stack(qs).mean(0).to(self.device)
        # Build what featurizers keep now (in member order) while it fits the budget.
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
        needed = [(p.key, f"payload of {p.member}") for p in ev.needs.parts()]
        needed += [(q.stored_key(store), q.describe()) for q in ev.needs.q]
        needed += [(k, f"train shard {a}-{b - 1} of {p.member}") for p in ev.needs.parts()
                   if store.has(p.key) for a, b, k in stored_shards(store, p.key) or ()]
        missing = [what for key, what in needed if not store.has(key)]
        if missing:
            raise SpecError(f"{ev.describe()} ran, but store {store.uri} no longer holds "
                            f"{len(missing)} of its member artifacts ({missing[0]}, ...): "
                            f"run the sweep again to restore them")

    def _load(self, part: FeaturePart) -> _Member:
        warm_member_imports(part.source)
        net = load_member(self.store, part.source, part.member).to(self.device)
        mask = member_mask(net, part.source, part.member, part.mask_mode)
        block = MemberBlock(part.source, part.member, self.method, part.mask_mode)
        ctx = member_context(net, part.source, part.member, mask, self.method, self.args,
                             keep=False, **declared_inputs(self.store, block))
        payload, _ = self.store.get(part.key)
        shards = stored_shards(self.store, part.key)
        if shards is None:
            side = self.impl.query_side(payload, self.device)
        else:
            side = self.impl.shard_query_side(payload, self.device)
        del payload
        return _Member(part, net, mask, ctx.featurizer(self.method.feature_dim), side,
                       shards)

    def _acquire(self, e: int) -> bool:
        """Make member e's featurizer keep what it builds if the budget allows; whether
        it does."""
        m = self.members[e]
        if e in self._resident:
            self._resident[e] = self._calls
            self._resident.move_to_end(e)
            return True
        need = m.featurizer.prepared_bytes
        if need == 0 or need > self.memory_bytes:
            return False
        held = sum(self.members[i].featurizer.prepared_bytes for i in self._resident)
        # Least recently used first, but never one already used in this call.
        for old in [i for i, c in self._resident.items() if c < self._calls]:
            if held + need <= self.memory_bytes:
                break
            self.members[old].featurizer.release()
            del self._resident[old]
            held -= self.members[old].featurizer.prepared_bytes
        if held + need > self.memory_bytes:
            return False
        m.featurizer.prepare()
        self._resident[e] = self._calls
        return True

    # ------------------------------------------------------------------ scoring

    @property
    def n_members(self) -> int:
        return len(self.members)

    @property
    def resident_members(self) -> int:
        """How many members' featurizers keep what they built (projection matrices)."""
        return len(self._resident)

    @property
    def resident_bytes(self) -> int:
        """Bytes held now: member networks, featurizers, query sides and mean Q."""
        return self.memory()["total"]

    def memory(self) -> dict[str, int]:
        """``resident_bytes`` by part: networks, projections, train_sides, q, and total."""
        nets = sum(_tensor_bytes([*m.net.parameters(), *m.net.buffers()]) for m in self.members)
        proj = sum(m.featurizer.held_bytes for m in self.members)
        sides = sum(_tensor_bytes(m.side.values()) for m in self.members) + self._shards.held
        q = 0 if self.q_mean is None else _tensor_bytes([self.q_mean])
        return {"networks": nets, "projections": proj, "train_sides": sides, "q": q,
                "total": nets + proj + sides + q}

    def features(self, e: int, x: torch.Tensor, y: torch.Tensor, split: str = "test",
                 start: int = 0) -> torch.Tensor:
        """Member e's gradient features (len(x), dim) of inputs (x, y), with its masks for
        rows ``start``.. of ``split``."""
        m = self.members[e]
        kept = self._acquire(e)
        try:
            return m.featurizer.features(TensorSamples(x, y), m.mask, split, start)
        finally:
            if not kept:  # transient: what it built for this call is dropped again
                m.featurizer.release()

    @property
    def row_schema(self) -> RowSchema:
        """What a new token row must be for this task (built on first use); a SpecError
        line for a task whose inputs are tensors."""
        if self._row_schema is None:
            schema = RowSchema.of_task(self.task)
            if schema is None:
                raise SpecError(f"task {self.task.name!r} takes tensor inputs, not rows of "
                                f"token dicts: give x and y as tensors")
            self._row_schema = schema
        return self._row_schema

    def inputs(self, x: Any, y: torch.Tensor | None = None) -> tuple[Any, torch.Tensor]:
        """(x, y) as the compute core takes them: token rows checked and padded by the
        task's collate (y then comes from the rows), tensors or a Batch as given."""
        if is_rows(x) or (isinstance(x, (list, tuple)) and y is None):
            if y is not None:
                raise SpecError("token rows carry their own targets ('labels', or made by "
                                "the task's collate): call scores(rows) without y")
            return self.row_schema.collate(self.row_schema.check(x))
        if y is None:
            raise SpecError("give targets y with tensor inputs x (only token rows may "
                            "leave them out)")
        if not hasattr(x, "shape"):
            raise SpecError(f"x must be a tensor, a Batch, or a list of token-row dicts "
                            f"(e.g. [{{'input_ids': [...], 'attention_mask': [...]}}]), "
                            f"got {type(x).__name__}")
        return x, y

    def scores(self, x: Any, y: torch.Tensor | None = None, split: str = "test",
               start: int = 0) -> torch.Tensor:
        """Ensemble scores (n, n_train) of new inputs, as float32 on the CPU.

        ``x`` is a tensor (or padded Batch) with targets ``y``, or, for a task with dict
        rows, a list of row dicts as a tokenizer gives them (``[{"input_ids": [...],
        "attention_mask": [...]}, ...]``, or a dict of such columns) and no ``y``: the rows
        are checked and padded by the task's own collate, as its test rows were.

        Per-sample dropout masks are keyed by (``split``, ``start`` + row): with
        ``split="test", start=i`` the rows get the masks of test rows i, i+1, ..., so
        stored test inputs get exactly the scores the sweep stored for them.
        """
        x, y = self.inputs(x, y)
        if x.shape[0] != y.shape[0]:
            raise SpecError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        self._calls += 1
        acc = torch.zeros(x.shape[0], self.n_train, dtype=torch.float64, device=self.device)
        for e, m in enumerate(self.members):
            feats = self.features(e, x, y, split, start)
            # a member's block as the batch path stores it (float32), accumulated in float64
            if m.shards is None:
                acc += self.impl.score_features(m.side, feats).to(self.device).double()
                continue
            for a, b, key in m.shards:  # one train shard at a time
                block = self.impl.score_features_shard(m.side, self._shards.get(key), feats)
                acc[:, a:b] += block.to(self.device).double()
        return self.impl.combine(acc / len(self.members), self.q_mean).float().cpu()

    def top_k(self, x: Any, y: torch.Tensor | None = None, k: int = 10, split: str = "test",
              start: int = 0) -> TopK:
        """The k strongest proponents and opponents in the train set of each input
        (inputs as :meth:`scores` takes them)."""
        if not 1 <= k <= self.n_train:
            raise SpecError(f"k must be in [1, {self.n_train}], got {k}")
        s = self.scores(x, y, split, start)
        top = torch.topk(s, k, dim=1, largest=True)
        low = torch.topk(s, k, dim=1, largest=False)
        return TopK(top.indices, top.values, low.indices, low.values)

    def __repr__(self) -> str:
        ev = self.evaluate
        return (f"<Attributor {ev.method.name} {ev.ensemble.label} on {ev.task.name}: "
                f"{self.n_members} members, {self.resident_members} featurizers resident, "
                f"{self.device}>")
