"""The seeds of a member's randomness: its dropout masks and its projection.

Derived from the member source's run (base seed and index) and the member's place in it,
so a member's masks and projection are the same in every configuration that serves it.
A leaf: job bodies read these without importing the job modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raytda.specs import Member, derive_seed

if TYPE_CHECKING:
    from raytda.plan.job import MemberSource


def mask_seed(source: MemberSource, member: Member) -> int:
    """Seed of the member's dropout masks."""
    return derive_seed("mask", source.base_seed, source.index, member.checkpoint, member.mask)


def projection_seed(source: MemberSource, member: Member) -> int:
    """Seed of the member's random projection (each adapter its own)."""
    parts: list[Any] = [source.base_seed, source.index, member.checkpoint, member.projection]
    if member.adapter is not None:
        parts += ["adapter", member.adapter]
    return derive_seed("projection", *parts)
