"""Token cross-entropy on response tokens only, with logits computed only where the loss needs them.

The language-model head is a (hidden x vocab) matmul, the largest single one in a small model; running
it on prompt and padding positions only to mask them out afterwards is wasted work.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metasft.train.batching import IGNORE


def decoder_and_head(lm: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The transformer body and output head of a (PEFT-wrapped) causal LM."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return base.get_decoder(), base.get_output_embeddings()


class ResponseLoss(nn.Module):
    """forward(input_ids, attention_mask, labels) -> (summed CE over response tokens, their count);
    with per_row=True, both per row of the batch: ((B,) summed CE, (B,) counts).

    A module (not a function) so that FSDP2 can shard it as the root: its forward is the one entry
    point that gathers the embedding and head weights.
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                per_row: bool = False):
        decoder, head = decoder_and_head(self.lm)
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE                       # (B, T-1): positions whose next token is scored
        h = hidden[:, :-1][keep]                       # (N, d)
        logits = head(h).float()                       # (N, V) only for scored positions
        if per_row:
            token_ce = F.cross_entropy(logits, targets[keep], reduction="none")     # (N,)
            rows = keep.nonzero()[:, 0]                                            # (N,) row of each token
            sums = torch.zeros(len(keep), dtype=token_ce.dtype, device=token_ce.device).index_add_(0, rows, token_ce)
            return sums, keep.sum(dim=1)
        loss_sum = F.cross_entropy(logits, targets[keep], reduction="sum")
        return loss_sum, keep.sum()
