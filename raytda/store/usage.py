"""``raytda store du``: what takes the space in a store.

Every artifact lives at ``<kind>/<key>.st`` (payload) and ``<kind>/<key>.json`` (record),
so the space per kind is the size of its directory: payloads, records, and any leases or
temp files a sweep has there. ``tensors`` also reads each payload's safetensors header
(its first bytes, not the data) and splits a kind's payload bytes by tensor name and
dtype, which says why a kind is large (a feature block's train features against its
solve's factor, say).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

from raytda.store.artifacts import TEMP_MARK, ArtifactStore

#: what each key prefix holds (a prefix not listed is shown as it is)
KIND_LABELS: dict[str, str] = {
    "model": "trained models",
    "ldsmodel": "LDS models (ground truth)",
    "basemodel": "LoRA base models",
    "adapter": "LoRA adapters",
    "q": "Q values",
    "block": "feature blocks (member payloads)",
    "blockpart": "feature block parts (one gradient pass, several members)",
    "shard": "train shards of feature blocks",
    "scores": "score chunks",
    "result": "results (configuration records)",
}
#: files directly under the store's root (a write probe, say), not in a kind's directory
OTHER = "(other)"


@dataclass
class KindUsage:
    """Space one kind of artifact takes: ``artifacts`` complete ones (records), ``files``
    and ``bytes`` of everything in its directory, and (when asked) payload bytes by
    ``(tensor name, dtype)``."""

    kind: str
    artifacts: int = 0
    files: int = 0
    bytes: int = 0
    tensors: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind)


def payload_tensors(store: ArtifactStore, path: str) -> dict[tuple[str, str], int]:
    """Bytes of each tensor of a safetensors payload by (name, dtype), from its header
    alone; empty when the file is not one (``store verify`` names such files)."""
    try:
        with store.fs.open_input_stream(path) as f:
            head = f.read(8)
            if len(head) < 8:
                return {}
            (size,) = struct.unpack("<Q", head)
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error):
        return {}
    out: dict[tuple[str, str], int] = {}
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        begin, end = info.get("data_offsets", (0, 0))
        # one entry per tensor role: "epoch6/head.weight" and "final/head.weight" of a
        # checkpointed model count together as "head.weight"
        key = (name.rsplit("/", 1)[-1], str(info.get("dtype", "?")))
        out[key] = out.get(key, 0) + int(end) - int(begin)
    return out


def usage(store: ArtifactStore, tensors: bool = False) -> list[KindUsage]:
    """Space per kind, largest first (ties by kind name)."""
    kinds: dict[str, KindUsage] = {}
    root = store.root.rstrip("/") + "/"
    for info in store.files():
        rel = info.path[len(root):] if info.path.startswith(root) else info.base_name
        kind = rel.split("/", 1)[0] if "/" in rel else OTHER
        u = kinds.setdefault(kind, KindUsage(kind))
        u.files += 1
        u.bytes += int(info.size or 0)
        name = info.base_name
        if TEMP_MARK in name:
            continue
        if name.endswith(".json"):
            u.artifacts += 1
        elif tensors and name.endswith(".st"):
            for key, n in payload_tensors(store, info.path).items():
                u.tensors[key] = u.tensors.get(key, 0) + n
    return sorted(kinds.values(), key=lambda u: (-u.bytes, u.kind))


def human(n: float) -> str:
    """Bytes in binary units, as ``store gc`` reports what it frees."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # unreachable: GiB is the last unit used


#: tensor lines shown under a kind (the largest); the rest are summed on one line
TOP_TENSORS = 5


def format_usage(rows: list[KindUsage]) -> str:
    """The table ``raytda store du`` prints: kind, artifacts, bytes, share, what."""
    total = sum(u.bytes for u in rows)
    lines = [f"{'kind':<10} {'artifacts':>9} {'bytes':>15} {'size':>10} {'share':>6}  what"]
    for u in rows:
        share = 100.0 * u.bytes / total if total else 0.0
        lines.append(f"{u.kind:<10} {u.artifacts:>9} {u.bytes:>15,} {human(u.bytes):>10} "
                     f"{share:>5.1f}%  {u.label}")
        ranked = sorted(u.tensors.items(), key=lambda t: (-t[1], t[0]))
        shown = [(f"{name} ({dtype})", n) for (name, dtype), n in ranked[:TOP_TENSORS]]
        if len(ranked) > TOP_TENSORS:
            shown.append((f"{len(ranked) - TOP_TENSORS} other tensor name(s)",
                          sum(n for _, n in ranked[TOP_TENSORS:])))
        for what, n in shown:
            lines.append(f"{'':<10} {'':>9} {n:>15,} {human(n):>10} {'':>6}    {what}")
    lines.append(f"{'total':<10} {sum(u.artifacts for u in rows):>9} {total:>15,} "
                 f"{human(total):>10} {100.0 if total else 0.0:>5.1f}%")
    return "\n".join(lines)


def run_du(store: ArtifactStore, tensors: bool = False) -> int:
    """The command: print the table; reads records' sizes only (and payload headers
    with ``tensors``), changes nothing."""
    print(format_usage(usage(store, tensors)))
    return 0
