"""Open-Sora's mask_strategy: which reference latents go where, and how strongly they are kept.

A strategy is ';'-separated groups 'loop_id,ref_id,ref_start,target_start,length,edit_ratio' (missing
trailing fields default to 0,0,0,0,1,0). Frame fields are latent frames; negative starts count from the
end. The frames a group covers get mask = edit_ratio (0: a fixed reference, (0,1): re-noised and edited
from t = ratio*1000 on); every other frame has mask 1 (generated).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULTS = ("0", "0", "0", "0", "1", "0")
FIELDS = ("loop_id", "ref_id", "ref_start", "target_start", "length", "edit_ratio")


@dataclass(frozen=True)
class MaskEntry:
    loop_id: int = 0
    ref_id: int = 0
    ref_start: int = 0
    target_start: int = 0
    length: int = 1
    edit_ratio: float = 0.0


def parse_mask_strategy(text: str | None) -> list[MaskEntry]:
    """Parse a strategy string; raises ValueError saying which group and field is wrong."""
    if text is None or not text.strip():
        return []
    entries = []
    for gi, group in enumerate(text.split(";"), start=1):
        fields = [f.strip() for f in group.split(",")]
        if not 1 <= len(fields) <= 6 or fields == [""]:
            raise ValueError(f"group {gi} '{group}' must have 1 to 6 comma-separated numbers ({', '.join(FIELDS)})")
        fields += list(DEFAULTS[len(fields):])
        values = []
        for name, f in zip(FIELDS, fields):
            try:
                values.append(float(f) if name == "edit_ratio" else int(f))
            except ValueError:
                kind = "a number" if name == "edit_ratio" else "an integer"
                raise ValueError(f"group {gi} '{group}': {name} '{f}' is not {kind}") from None
        entry = MaskEntry(*values)
        if entry.loop_id < 0 or entry.ref_id < 0:
            raise ValueError(f"group {gi} '{group}': loop_id and ref_id must not be negative")
        if entry.length < 1:
            raise ValueError(f"group {gi} '{group}': length must be at least 1")
        if not 0.0 <= entry.edit_ratio <= 1.0:
            raise ValueError(f"group {gi} '{group}': edit_ratio {entry.edit_ratio} is not within 0..1")
        entries.append(entry)
    return entries


def find_nearest_point(value: int, point: int, max_value: int) -> int:
    """Snap a start to a multiple of `point` (v1.2's align=5: the temporal VAE's latent chunk), rounding up
    past the middle unless that would leave the last chunk."""
    t = value // point
    if value % point > point / 2 and t < max_value // point - 1:
        t += 1
    return t * point


def place_reference(z: torch.Tensor, mask: torch.Tensor, row: int, entry: MaskEntry, ref: torch.Tensor,
                    align: int | None = None):
    """Copy ref[:, ref_start:+length] into z[row, :, target_start:+length] and set their mask (in place).
    z [B,C,T,H,W]; ref [C,Tr,H,W]; mask [B,T]."""
    rs = entry.ref_start + ref.shape[1] if entry.ref_start < 0 else entry.ref_start
    ts = entry.target_start + z.shape[2] if entry.target_start < 0 else entry.target_start
    if align is not None:
        rs = find_nearest_point(rs, align, ref.shape[1])
        ts = find_nearest_point(ts, align, z.shape[2])
    length = min(entry.length, z.shape[2] - ts, ref.shape[1] - rs)
    z[row, :, ts:ts + length] = ref[:, rs:rs + length].to(z)
    mask[row, ts:ts + length] = entry.edit_ratio


def apply_mask_strategy(z: torch.Tensor, refs: list, strategies: list, loop_i: int = 0, align: int | None = None):
    """The original's apply_mask_strategy: one strategy string and reference list per sample. Writes the
    references into z in place; returns the mask [B,T] (None when no sample has a strategy)."""
    if not strategies:
        return None
    mask = torch.ones(z.shape[0], z.shape[2], dtype=torch.float32, device=z.device)
    for i, text in enumerate(strategies):
        for entry in parse_mask_strategy(text):
            if entry.loop_id == loop_i:
                place_reference(z, mask, i, entry, refs[i][entry.ref_id], align)
    return mask


def apply_conditions(z: torch.Tensor, conditions: list, align: int | None = None):
    """Node path: every (MaskEntry, ref latent) applies to every batch row. Returns (z, mask)."""
    z = z.clone()
    mask = torch.ones(z.shape[0], z.shape[2], dtype=torch.float32)
    for entry, ref in conditions:
        for row in range(z.shape[0]):
            place_reference(z, mask, row, entry, ref, align)
    return z, mask


def conditions_mask(z: torch.Tensor, info: dict, denoise: float, x0: torch.Tensor):
    """(z, mask) for the mask-strategy samplers: the references the condition nodes placed on the latent, and
    denoise < 1 as video-to-video (free frames start from the input latent, re-noised at t = denoise, exactly
    how an edit ratio works)."""
    mask = None
    if info.get("conditions"):
        z, mask = apply_conditions(z, info["conditions"], align=info.get("align"))
    if denoise < 1.0:
        mask = torch.ones(z.shape[0], z.shape[2]) if mask is None else mask
        free = mask >= 1
        z = torch.where(free[:, None, :, None, None], x0, z)
        mask = torch.where(free, torch.full_like(mask, denoise), mask)
    return z, mask
