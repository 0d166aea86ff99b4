"""C LoRA adapters of one base model in stacked tensors, applied per row of a batch (issue 10).

For every target projection W (out x in) of the frozen base there is one A (C, r, in) and one
B (C, out, r); a row of cell c computes y = W x + scale * B_c (A_c x), PEFT's LoRA forward
(lora_B(lora_A(x)) * scaling) with the adapter chosen by the row. The delta is added by a forward
hook on the base `nn.Linear` (PEFT's own adapter is switched off meanwhile), so the model's
ordinary forward, HF's or ours (`metasft.eval.lora_forward`), runs every cell's adapter at once.

Rows are kept sorted by cell (`RowCells`), so the delta is two grouped bmm's over the cell dimension,
(C, rows*T, in) @ (C, in, r) @ (C, r, out), as in Punica/S-LoRA's segmented multiplication: no
per-row copy of any weight; the second is a baddbmm that adds the scaled delta to the base output.
When the cells have unequal row counts (finished rows left the batch, or cells adapt on batches of
different sizes) the rows are scattered into a (C, n_max) grid first.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from metasft.eval.specs import ADAPTER_NAME


@dataclass
class RowCells:
    """Which cell each row of the batch belongs to; rows must be sorted by cell.

    `cells` (N,) non-decreasing cell index per row. Derived: `present` (K,) the cells that have rows,
    `n_max` the most rows of one cell, `slot` (N,) each row's place in the (K, n_max) grid, or None
    when the grid is the batch itself (every present cell has n_max rows).
    """
    cells: torch.Tensor
    present: torch.Tensor
    n_max: int
    slot: torch.Tensor | None

    @classmethod
    def of(cls, cells: torch.Tensor) -> "RowCells":
        if cells.numel() and bool((cells[1:] < cells[:-1]).any()):
            raise ValueError("RowCells: rows must be sorted by cell")
        present, counts = torch.unique_consecutive(cells, return_counts=True)
        n_max = int(counts.max())
        if bool((counts == n_max).all()):
            return cls(cells, present, n_max, None)
        group = torch.repeat_interleave(torch.arange(len(present), device=cells.device), counts)  # (N,)
        starts = torch.cumsum(counts, 0) - counts
        within = torch.arange(len(cells), device=cells.device) - starts[group]
        return cls(cells, present, n_max, group * n_max + within)

    @classmethod
    def blocks(cls, counts: list[int], device) -> "RowCells":
        """Rows of cell 0, then cell 1, ...: `counts[c]` rows each."""
        return cls.of(torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)).to(device))

    def select(self, keep: torch.Tensor) -> "RowCells":
        """The layout after keeping rows `keep` (increasing indices)."""
        return RowCells.of(self.cells[keep])


class StackedLora:
    """Stacked LoRA tensors for `n_cells` adapters of the PEFT model `peft`'s target modules.

    `params` are float32 leaves (train them with any elementwise optimizer); `load(c, state)` copies
    a PEFT adapter state (names as in `peft.named_parameters()`) into cell c; `cell_state(c)` gives
    it back in the same form. Inside `active(rows)` the model's forward applies cell c's adapter to
    the rows of cell c.
    """

    def __init__(self, peft, n_cells: int):
        from peft.tuners.lora import Linear as LoraLinear

        if n_cells < 1:
            raise ValueError("StackedLora needs at least one cell")
        self.peft, self.n_cells = peft, n_cells
        self.names: list[str] = []          # PEFT module name of each target layer
        self.layers: list[nn.Linear] = []   # the frozen base projections the hooks sit on
        self.scales: list[float] = []
        self.A: list[torch.Tensor] = []     # (C, r, in)
        self.B: list[torch.Tensor] = []     # (C, out, r)
        for name, module in peft.named_modules():
            if not isinstance(module, LoraLinear):
                continue
            a, b = module.lora_A[ADAPTER_NAME].weight, module.lora_B[ADAPTER_NAME].weight
            drop = module.lora_dropout[ADAPTER_NAME]
            if isinstance(drop, nn.Dropout) and drop.p > 0:  # adapt() would draw dropout masks we cannot match
                raise ValueError("StackedLora: LoRA dropout > 0 is not supported (model.lora_dropout=0)")
            self.names.append(name)
            self.layers.append(module.base_layer)
            self.scales.append(float(module.scaling[ADAPTER_NAME]))
            self.A.append(a.detach().float().unsqueeze(0).repeat(n_cells, 1, 1).requires_grad_(True))
            self.B.append(b.detach().float().unsqueeze(0).repeat(n_cells, 1, 1).requires_grad_(True))
        if not self.layers:
            raise ValueError("StackedLora: the model has no LoRA layers")
        self._rows: RowCells | None = None

    @property
    def params(self) -> list[torch.Tensor]:
        return self.A + self.B

    # ------------------------------------------------------------------------------ adapter states
    def _keys(self, i: int) -> tuple[str, str]:
        return (f"{self.names[i]}.lora_A.{ADAPTER_NAME}.weight", f"{self.names[i]}.lora_B.{ADAPTER_NAME}.weight")

    @torch.no_grad()
    def load(self, cell: int, state: dict[str, torch.Tensor]) -> None:
        """Copy a PEFT adapter state into cell `cell`."""
        for i in range(len(self.layers)):
            ka, kb = self._keys(i)
            self.A[i][cell].copy_(state[ka])
            self.B[i][cell].copy_(state[kb])

    def cell_state(self, cell: int) -> dict[str, torch.Tensor]:
        """Cell `cell`'s adapter as a PEFT state dict (copies)."""
        out = {}
        for i in range(len(self.layers)):
            ka, kb = self._keys(i)
            out[ka], out[kb] = self.A[i][cell].detach().clone(), self.B[i][cell].detach().clone()
        return out

    # ------------------------------------------------------------------------------ the forward
    @contextlib.contextmanager
    def active(self, rows: RowCells) -> Iterator["StackedLora"]:
        """The model's forwards apply each row's cell adapter (PEFT's adapter off); `set_rows` may
        change the layout inside (rows leaving a decoding batch)."""
        self._rows = rows
        hooks = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)]
        try:
            with self.peft.disable_adapter():
                yield self
        finally:
            for h in hooks:
                h.remove()
            self._rows = None

    def set_rows(self, rows: RowCells) -> None:
        self._rows = rows

    def _hook(self, i: int):
        def hook(module, inputs, output):
            return self.add_delta(i, inputs[0], output)
        return hook

    def add_delta(self, i: int, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """output + scale * B_c (A_c x) for layer i, x (N, ..., in), output (N, ..., out), c the row's
        cell. The scale and the sum are folded into the second bmm (baddbmm's alpha and beta) or the
        final add, instead of two more passes over the (N, ..., out) output. Computed in the
        activations' dtype: float32 for a float32 base (PEFT's own arithmetic); on a bfloat16 base
        (eval.dtype) the float32 adapters are cast to bfloat16 for the products (their gradients still
        reach the float32 tensors), where PEFT would cast every activation to float32 and back."""
        rows = self._rows
        if rows is None or rows.cells.shape[0] != x.shape[0]:
            raise RuntimeError(f"StackedLora: a batch of {x.shape[0]} rows, the layout has "
                               f"{None if rows is None else rows.cells.shape[0]}")
        A, B = self.A[i], self.B[i]
        if len(rows.present) != self.n_cells:
            A, B = A.index_select(0, rows.present), B.index_select(0, rows.present)
        A, B = A.to(x.dtype), B.to(x.dtype)
        k, scale = len(rows.present), self.scales[i]
        if rows.slot is None:  # every present cell has n_max rows: the batch is the (K, n_max) grid
            h = torch.bmm(x.reshape(k, -1, x.shape[-1]), A.transpose(1, 2))              # (K, n_max*T, r)
            base = output.reshape(k, -1, output.shape[-1])
            return torch.baddbmm(base, h, B.transpose(1, 2), alpha=scale).reshape(output.shape)
        grid = x.new_zeros((k * rows.n_max, *x.shape[1:])).index_copy(0, rows.slot, x)  # rows into the grid
        h = torch.bmm(grid.reshape(k, -1, x.shape[-1]), A.transpose(1, 2))
        d = torch.bmm(h, B.transpose(1, 2)).reshape(k * rows.n_max, *x.shape[1:-1], -1).index_select(0, rows.slot)
        return torch.add(output, d, alpha=scale)
