"""New token rows for a task with dict rows: checked one by one, then padded by the task's
own collate, so that an input attributed after the sweep (``Attributor.scores``, a
``raytda serve`` request) is batched exactly as the sweep batched its test rows.

A row is what a tokenizer gives per text: ``{"input_ids": [...], "attention_mask":
[...]}``, of any length, values as Python lists (JSON), numpy arrays or tensors. What a
row must hold comes from the task's own test row 0 (:class:`RowSchema`): its keys, each
key's dtype and number of dimensions, which sequences run along the tokens. Two keys may
be left out:

- ``attention_mask`` (when the task's rows have one): all ones, every token real;
- the targets (``labels``) when the task's collate makes them itself (e.g.
  ``PadCollate(labels_from="input_ids")`` for a causal LM). A row may still give its own,
  e.g. -100 over a prompt so that only a generation is attributed.

Every check runs before any row is batched, and a failure is one
:class:`~raytda.specs.SpecError` line naming the row: a row that is not a dict, unknown or
missing keys, values of the wrong type or shape, an empty row, a mask (or another
per-token key) whose length differs from the ids, mask values other than 0 and 1, ids
outside the model's vocabulary, more tokens than the model has positions, targets outside
the model's classes, and a row with nothing to attribute (every target that f reads is
ignored, e.g. one token under a next-token output). An id beyond the vocabulary would
otherwise fail deep inside the model's embedding, and on a GPU as a device-side assert
that ends the process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from raytda.data.collate import as_tensor
from raytda.specs import SpecError

if TYPE_CHECKING:
    from raytda.core.batch import Batch
    from raytda.core.outputs import ModelOutput
    from raytda.data.check import TargetRule
    from raytda.data.samples import DictSamples
    from raytda.task import Task

IDS = "input_ids"
MASK = "attention_mask"


@dataclass(frozen=True)
class KeyRule:
    """What one key of a row holds: ``dtype``, ``dims`` dimensions (0: one number per
    row, 1: a sequence), ``tail`` the sizes of the dimensions after the first, whether the
    sequence runs along the tokens (same length as the ids), and how a row may leave it out
    (``"ones"``: an all-ones mask; ``"collate"``: the task's collate makes it)."""

    name: str
    dtype: torch.dtype
    dims: int
    tail: tuple[int, ...] = ()
    per_token: bool = False
    default: str | None = None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def vocabulary_size(model: nn.Module) -> int | None:
    """How many token ids the model's input embedding takes: Hugging Face's
    ``get_input_embeddings()``, else the model's only ``nn.Embedding``; None if unknown."""
    emb = None
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        try:
            emb = get()
        except (NotImplementedError, AttributeError):
            emb = None
    if not isinstance(emb, nn.Embedding):
        found = [m for m in model.modules() if isinstance(m, nn.Embedding)]
        emb = found[0] if len(found) == 1 else None
    return None if emb is None else int(emb.num_embeddings)


def max_positions(model: nn.Module) -> int | None:
    """The most tokens a row may have: the model config's ``max_position_embeddings`` or
    ``n_positions`` (learned position tables end there); None when it declares neither."""
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        v = getattr(config, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def is_rows(x: Any) -> bool:
    """Whether ``x`` is token rows (a list of dicts, or a dict of columns as a tokenizer
    gives for a list of texts) rather than an already batched tensor or Batch."""
    from raytda.core.batch import Batch

    if isinstance(x, (torch.Tensor, Batch)):
        return False
    if isinstance(x, Mapping):
        return True
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(r, Mapping) for r in x)


def count_rows(x: Any) -> int:
    """How many rows ``x`` holds (list of rows or dict of columns), before any check."""
    if isinstance(x, Mapping):
        lengths = {len(v) for v in x.values() if isinstance(v, (list, tuple, torch.Tensor,
                                                                np.ndarray))}
        return max(lengths) if lengths else 0
    return len(x) if isinstance(x, (list, tuple)) else 0


@dataclass(frozen=True, eq=False)
class RowSchema:
    """What a new row must be for one task (see the module docstring), and how rows are
    padded into a batch (:meth:`collate`, the test split's own collate).

    Build it with :meth:`of`. ``vocab``/``max_tokens`` bound the ids (None: unchecked),
    ``target_rule`` and ``output`` check the targets."""

    keys: tuple[KeyRule, ...]
    samples: DictSamples
    vocab: int | None = None
    max_tokens: int | None = None
    target_rule: TargetRule | None = None
    output: ModelOutput | None = None

    @classmethod
    def of(cls, samples: DictSamples, model: nn.Module, target_rule: TargetRule | None = None,
           output: ModelOutput | None = None) -> RowSchema:
        """The schema of rows like ``samples``' row 0 for ``model``."""
        first = samples.item(0)
        values = {k: as_tensor(v) for k, v in first.items()}
        label = samples.label_key
        ids_len = values[IDS].shape[0] if IDS in values and values[IDS].dim() == 1 else None
        made = False
        if label not in values:
            made = True  # the rows have no labels: the collate makes them (or fails later)
        else:
            try:
                made = label in samples.collate([{k: v for k, v in first.items() if k != label}])
            except Exception:  # a collate that needs the labels: they are required
                made = False
        rules = []
        for k, v in values.items():
            default = "ones" if k == MASK else ("collate" if k == label and made else None)
            per_token = (ids_len is not None and v.dim() >= 1 and k != IDS
                         and v.shape[0] == ids_len)
            rules.append(KeyRule(k, v.dtype, v.dim(), tuple(v.shape[1:]), per_token, default))
        if label not in values and made:
            # labels as the collate makes them, from row 0 collated alone
            lab = as_tensor(samples.collate([first])[label][0])
            rules.append(KeyRule(label, lab.dtype, lab.dim(), tuple(lab.shape[1:]),
                                 ids_len is not None and lab.dim() >= 1, "collate"))
        return cls(tuple(rules), samples, vocabulary_size(model), max_positions(model),
                   target_rule, output)

    @classmethod
    def of_task(cls, task: Task) -> RowSchema | None:
        """The schema of ``task``'s test rows, with the target rule its model output sets
        (found as a sweep's checks find it, from a freshly built model's logits); None
        when the task's test data are tensors, not dict rows."""
        from raytda.data.samples import DictSamples
        from raytda.validate import check_output

        data = task.data()
        if not isinstance(data.test, DictSamples):
            return None
        model = task.build_model()
        rules = check_output(task, task.network(model), data)
        return cls.of(data.test, model, rules["test"], task.output())

    # ------------------------------------------------------------------ description

    def example(self) -> list[dict[str, Any]]:
        """One short valid row (what a request may send), for descriptions."""
        n = 3
        ids = [min(i + 1, (self.vocab or 4) - 1) for i in range(n)]
        row: dict[str, Any] = {}
        for r in self.keys:
            if r.default == "collate":
                continue
            if r.name == IDS:
                row[r.name] = ids
            elif r.name == MASK:
                row[r.name] = [1] * n
            else:
                shape = ((n,) if r.dims >= 1 else ()) + r.tail
                row[r.name] = np.zeros(shape, dtype=np.float64 if r.dtype.is_floating_point
                                       else np.int64).tolist()
        return [row]

    def describe(self) -> dict[str, Any]:
        """JSON description of a row and of a request (what GET on a deployment says)."""
        keys = {}
        for r in self.keys:
            d: dict[str, Any] = {"dtype": _dtype_name(r.dtype),
                                 "shape": (["tokens"] if r.name == IDS or r.per_token else
                                           (["any"] if r.dims else [])) + list(r.tail),
                                 "required": r.default is None}
            if r.name == IDS and self.vocab is not None:
                d["values"] = f"0..{self.vocab - 1}"
            if r.name == MASK:
                d["values"] = "0 or 1 (1: a real token)"
            if r.default == "ones":
                d["default"] = "all 1"
            elif r.default == "collate":
                d["default"] = "made by the task's collate"
                if self.target_rule is not None and self.target_rule.ignore is not None:
                    d["values"] = (f"0..{self.target_rule.classes - 1}, or "
                                   f"{self.target_rule.ignore} for a token not attributed")
            keys[r.name] = d
        return {"inputs": "token rows", "row_keys": keys, "max_tokens": self.max_tokens,
                "vocab_size": self.vocab,
                "classes": None if self.target_rule is None else self.target_rule.classes,
                "example": {"rows": self.example(), "k": 10}}

    # ------------------------------------------------------------------ checking

    def check(self, rows: Any, where: str = "input") -> list[dict[str, torch.Tensor]]:
        """``rows`` (a list of row dicts, or a dict of columns) checked and completed
        (mask and collate-made targets filled in); one SpecError line on the first fault."""
        rows = self._as_list(rows, where)
        out = [self._row(row, i, where) for i, row in enumerate(rows)]
        self._check_targets(out, where)
        return out

    def _as_list(self, rows: Any, where: str) -> list[Any]:
        if isinstance(rows, Mapping):  # columns: {"input_ids": [[...], [...]], ...}
            lengths = {k: len(v) if isinstance(v, (list, tuple, torch.Tensor, np.ndarray))
                       else None for k, v in rows.items()}
            if not lengths or None in lengths.values() or len(set(lengths.values())) != 1:
                raise SpecError(f"{where} columns must be lists of one length, one entry per "
                                f"row, got lengths {lengths}")
            n = next(iter(lengths.values()))
            rows = [{k: v[i] for k, v in rows.items()} for i in range(n)]
        if not isinstance(rows, (list, tuple)):
            raise SpecError(f"{where} rows must be a list of rows (dicts such as "
                            f"{{'input_ids': [...]}}), got {type(rows).__name__}")
        if not rows:
            raise SpecError(f"{where} holds no rows; send at least one")
        return list(rows)

    def _fail(self, where: str, i: int, what: str) -> SpecError:
        return SpecError(f"{where} row {i}: {what}")

    def _row(self, row: Any, i: int, where: str) -> dict[str, torch.Tensor]:
        if not isinstance(row, Mapping):
            raise self._fail(where, i, f"is a {type(row).__name__}, not a dict such as "
                                       f"{self.example()[0]}")
        names = [r.name for r in self.keys]
        unknown = sorted(str(k) for k in row if k not in names)
        if unknown:
            raise self._fail(where, i, f"unknown key(s) {', '.join(map(repr, unknown))}; the "
                                       f"task's rows take {', '.join(names)}")
        missing = [r.name for r in self.keys if r.name not in row and r.default is None]
        if missing:
            raise self._fail(where, i, f"lacks {', '.join(map(repr, missing))}")
        out = {r.name: self._value(r, row[r.name], i, where) for r in self.keys if r.name in row}
        ids = out.get(IDS)
        if ids is not None:
            n = int(ids.shape[0])
            if self.max_tokens is not None and n > self.max_tokens:
                raise self._fail(where, i, f"has {n} tokens; the model takes at most "
                                           f"{self.max_tokens}: shorten it")
            if self.vocab is not None:
                bad = (ids < 0) | (ids >= self.vocab)
                if bad.any():
                    raise self._fail(where, i, f"token id {int(ids[bad][0])} is outside the "
                                               f"vocabulary 0..{self.vocab - 1}")
            for r in self.keys:
                if r.per_token and r.name in out and out[r.name].shape[0] != n:
                    raise self._fail(where, i, f"{r.name!r} has {out[r.name].shape[0]} values "
                                               f"but {IDS!r} has {n}; give one per token")
        if MASK in out:
            m = out[MASK]
            if not bool(((m == 0) | (m == 1)).all()):
                raise self._fail(where, i, f"{MASK!r} holds values other than 0 and 1")
            if not bool((m != 0).any()):
                raise self._fail(where, i, f"{MASK!r} is all 0: no token to attribute")
        return self._fill(out, i, where)

    def _value(self, r: KeyRule, v: Any, i: int, where: str) -> torch.Tensor:
        what = f"{r.name!r}"
        wants_int = not r.dtype.is_floating_point and r.dtype != torch.bool
        if isinstance(v, torch.Tensor):
            a = v.detach().cpu().numpy() if v.dtype != torch.bfloat16 else v.float().numpy()
        else:
            try:
                a = np.asarray(v)
            except (ValueError, OverflowError):
                raise self._fail(where, i, f"{what} is ragged or holds numbers out of "
                                           f"range") from None
        if r.dims >= 1 and a.ndim >= 1 and a.shape[0] == 0:
            raise self._fail(where, i, f"{what} is empty; send at least one token")
        if a.dtype.kind == "O" and all(isinstance(e, int) for e in np.ravel(a)):
            raise self._fail(where, i, f"{what} holds integers out of the range of "
                                       f"{_dtype_name(r.dtype)}")
        if a.dtype.kind not in "biuf" or (a.dtype.kind == "b" and r.dtype != torch.bool):
            kind = "booleans" if a.dtype.kind == "b" else "values that are not numbers"
            raise self._fail(where, i, f"{what} holds {kind}; send "
                                       f"{'integers' if wants_int else 'numbers'}")
        if wants_int and a.dtype.kind == "f":
            raise self._fail(where, i, f"{what} must hold integers ({_dtype_name(r.dtype)}), "
                                       f"got floats")
        if a.ndim != r.dims or tuple(a.shape[1:]) != r.tail:
            want = ", ".join(["tokens" if r.dims else "", *map(str, r.tail)]).strip(", ")
            shape = "one number" if r.dims == 0 else f"[{want}]"
            raise self._fail(where, i, f"{what} has shape {list(a.shape)}; each row's "
                                       f"{r.name} is {shape}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise self._fail(where, i, f"{what} holds NaN or infinity")
        if wants_int and a.size:
            info = torch.iinfo(r.dtype)
            if int(a.min()) < info.min or int(a.max()) > info.max:
                raise self._fail(where, i, f"{what} holds numbers out of the range of "
                                           f"{_dtype_name(r.dtype)}")
        return torch.from_numpy(np.ascontiguousarray(a)).to(r.dtype)

    def _fill(self, row: dict[str, torch.Tensor], i: int, where: str
              ) -> dict[str, torch.Tensor]:
        """The left-out keys, so every row of a batch has the same keys: an all-ones mask,
        then targets as the collate makes them for this row alone (no padding)."""
        n = int(row[IDS].shape[0]) if IDS in row else None
        for r in self.keys:
            if r.name in row or r.default != "ones":
                continue
            row[r.name] = torch.ones(n if n is not None else 1, *r.tail, dtype=r.dtype)
        for r in self.keys:
            if r.name in row or r.default != "collate":
                continue
            try:
                made = as_tensor(self.samples.collate([row])[r.name][0])
            except Exception as e:
                raise self._fail(where, i, f"the task's collate cannot make its {r.name!r} "
                                           f"({type(e).__name__}: {e}); give them") from None
            row[r.name] = made[:n] if r.per_token and n is not None else made
        return row

    def _check_targets(self, rows: list[dict[str, torch.Tensor]], where: str) -> None:
        """Targets within the model's classes, and at least one that f reads per row."""
        rule = self.target_rule
        if rule is None:
            return
        _, y = self.collate(rows)
        if y.is_floating_point() or y.dtype == torch.bool:
            raise SpecError(f"{where}: targets are {_dtype_name(y.dtype)}; the model output "
                            f"reads them as class indices")
        if not rule.fits(tuple(y.shape[1:])):
            raise SpecError(f"{where}: target shape {tuple(y.shape[1:])} does not match the "
                            f"model's logits")
        out = (y < 0) | (y >= rule.classes)
        if rule.ignore is not None:
            out &= y != rule.ignore
        if out.any():
            i = int(out.reshape(len(rows), -1).any(1).nonzero()[0, 0])
            v = int(y[i][out[i]].reshape(-1)[0]) if y.ndim > 1 else int(y[i])
            allowed = f"0..{rule.classes - 1}" + ("" if rule.ignore is None
                                                  else f" or {rule.ignore}")
            raise self._fail(where, i, f"target {v} is outside {allowed} (the model has "
                                       f"{rule.classes} outputs)")
        if rule.ignore is not None and self.output is not None and y.ndim > 1:
            # f on logits that prefer class 0, every kept target made 0: nonzero exactly
            # where f reads a target (a log-likelihood or margin term per kept position)
            probe_y = torch.where(y == rule.ignore, y, torch.zeros_like(y))
            logits = torch.zeros(*y.shape, 2)
            logits[..., 0] = 1.0
            try:
                f = self.output.f(logits, probe_y)
            except Exception:  # an output that cannot take the probe: left unchecked
                return
            empty = (f == 0).nonzero()
            if len(empty):
                raise self._fail(where, int(empty[0, 0]), f"has no target that the model "
                                                          f"output reads (every one is "
                                                          f"{rule.ignore}, or the row is one "
                                                          f"token under a next-token output): "
                                                          f"nothing to attribute")

    # ------------------------------------------------------------------ batching

    def collate(self, rows: Sequence[Mapping[str, Any]]) -> tuple[Batch, torch.Tensor]:
        """Checked rows padded by the task's collate: (inputs as a Batch, targets)."""
        return self.samples.collate_xy(list(rows))
