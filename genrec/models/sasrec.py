"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018, arXiv 1808.09781).

A causal Transformer over a user's most recent ``max_history`` items predicts the next item at every
position. Item embeddings are shared between input and output: the score of item ``i`` after
position ``t`` is ``<h_t, E_i>``. The layer layout follows RecBole 1.2.1's SASRec (post-LayerNorm
blocks, GELU feed-forward, embedding LayerNorm + dropout, N(0, 0.02) initialisation) so that the
peer comparison in ``benchmarks/sasrec.py`` compares training recipes, not architectures.

Losses:
  * ``ce`` (default): full-softmax cross-entropy over all N items at every non-padded position.
    Public reproductions show SASRec with full softmax beats the BCE-trained SASRec quoted in the
    TIGER paper by 48-83%, so generative models must be compared against this one.
  * ``bpr``: one uniformly sampled negative per position, ``-log sigmoid(s_pos - s_neg)``.

``future_targets = k > 1`` (``ce`` only) trains each position on each of the next k items of its
window, not only the next one: the loss is the mean of ``-log softmax`` over every (position, future
item) pair whose item lies inside the window. On MovieLens many ratings share a timestamp, so the
order of the next few items is partly arbitrary; scoring is unchanged (the next item after the
history). ``k = 1`` is SASRec's (and RecBole's) loss.

Inputs are left-padded with item 0. By default (``positions = "latest_last"``) the most recent item
is always at position L-1 and shares its positional embedding between training windows and evaluation
histories; ``"oldest_first"`` numbers positions from the oldest item in view, as RecBole does.
``softmax_padding = True`` keeps the padding item in the training softmax, as RecBole does (its row is
initialised like the others and trained through the output side only); scores never rank it.

The model follows :class:`genrec.models.base.Recommender`: ``score(histories)`` scores every item
after each history (users are not modelled, ``users`` is ignored). ``save_pretrained(folder)`` writes
one safetensors file (weights; settings and raw item ids as metadata) that ``from_pretrained`` reads.

Shapes: B batch, L sequence length (``max_history``), D hidden size, N number of items.
"""

from __future__ import annotations


import gin
import torch
import torch.nn.functional as F
from torch import nn

from genrec.models.single_file import ItemTableModel

__all__ = ["SASRec"]

WEIGHTS = "sasrec.safetensors"


class _Block(nn.Module):
    """Post-LN Transformer block: LN(h + attn(h)), then LN(h + FFN(h))."""

    def __init__(self, hidden: int, heads: int, inner: int, dropout: float, attn_dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"SASRec.hidden_size ({hidden}) must be divisible by SASRec.num_heads ({heads})")
        self.heads, self.attn_dropout = heads, attn_dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(), nn.Linear(inner, hidden))
        self.ln2 = nn.LayerNorm(hidden, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, L, D = h.shape
        q, k, v = self.qkv(h).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        h = self.ln1(h + self.drop(self.out(a.transpose(1, 2).reshape(B, L, D))))
        return self.ln2(h + self.drop(self.ffn(h)))


@gin.configurable(denylist=["num_items"])
class SASRec(ItemTableModel):
    """Causal self-attention next-item model.

    Args:
        num_items: N, items are 1..N and 0 is padding (from the data, never from gin).
        max_history: L, most recent items the model sees.
        hidden_size: D.
        num_layers: Transformer blocks.
        num_heads: attention heads per block.
        inner_size: feed-forward width.
        dropout: dropout on embeddings, attention output and feed-forward output.
        attn_dropout: dropout on attention weights.
        loss: ``"ce"`` (full softmax) or ``"bpr"`` (one sampled negative per position).
        positions: ``"latest_last"`` (the most recent item at position L-1) or ``"oldest_first"`` (the
            oldest item in view at position 0: RecBole's numbering).
        softmax_padding: include the padding item in the ``ce`` softmax (RecBole); default: excluded.
        future_targets: k, the next items each position is trained to predict (``ce`` only; 1: the next).
    """

    weights_file = WEIGHTS

    def __init__(self, num_items: int, max_history: int = 50, hidden_size: int = 64, num_layers: int = 2,
                 num_heads: int = 2, inner_size: int = 256, dropout: float = 0.2, attn_dropout: float = 0.2,
                 loss: str = "ce", positions: str = "latest_last", softmax_padding: bool = False,
                 future_targets: int = 1):
        super().__init__()
        if loss not in ("ce", "bpr"):
            raise ValueError(f"unknown SASRec.loss {loss!r}; use 'ce' (full softmax) or 'bpr'")
        if positions not in ("latest_last", "oldest_first"):
            raise ValueError(f"unknown SASRec.positions {positions!r}; use 'latest_last' or 'oldest_first'")
        sizes = {"max_history": max_history, "hidden_size": hidden_size, "num_layers": num_layers,
                 "num_heads": num_heads, "inner_size": inner_size, "future_targets": future_targets}
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SASRec.{name} = {value!r} cannot work; it must be an int >= 1")
        for name, value in {"dropout": dropout, "attn_dropout": attn_dropout}.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise ValueError(f"SASRec.{name} = {value!r} cannot work; it must be a number in [0, 1)")
        if future_targets > 1 and loss != "ce":
            raise ValueError(f"SASRec.future_targets = {future_targets} needs SASRec.loss = 'ce' (the full softmax); "
                             "with 'bpr' use future_targets = 1")
        self.num_items, self.max_history, self.loss_type = num_items, max_history, loss
        self.settings = {"num_items": num_items, "max_history": max_history, "hidden_size": hidden_size,
                         "num_layers": num_layers, "num_heads": num_heads, "inner_size": inner_size,
                         "dropout": dropout, "attn_dropout": attn_dropout, "loss": loss, "positions": positions,
                         "softmax_padding": softmax_padding, "future_targets": future_targets}
        self.item_emb = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.pos_emb = nn.Embedding(max_history, hidden_size)
        self.ln = nn.LayerNorm(hidden_size, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(hidden_size, num_heads, inner_size, dropout, attn_dropout)
                                    for _ in range(num_layers))
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()
        if isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, D] for left-padded item ids [B, L] (L <= max_history)."""
        B, L = input_ids.shape
        real = input_ids > 0
        idx = torch.arange(L, device=input_ids.device)
        if self.settings["positions"] == "oldest_first":
            positions = (idx[None, :] - (~real).sum(1, keepdim=True)).clamp(min=0)  # [B, L]
        else:
            positions = idx + self.max_history - L  # [L]
        h = self.drop(self.ln(self.item_emb(input_ids) + self.pos_emb(positions)))
        causal = idx[None, :] <= idx[:, None]  # [L(query), L(key)]
        # A query sees earlier real items and always itself, so padded rows never attend to nothing.
        allowed = (causal[None] & (real[:, None, :] | torch.eye(L, dtype=torch.bool, device=h.device)))[:, None]
        for block in self.blocks:
            h = block(h, allowed)
        return h

    def future_items(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The next ``future_targets`` items after every position [B, L, k]; 0 where the window ends first."""
        B, L = input_ids.shape
        # the window's items after position 0, then one 0 that every index past the window's end reads
        sequence = torch.cat([input_ids, labels[:, -1:].clamp(min=0), input_ids.new_zeros(B, 1)], 1)  # [B, L+2]
        steps = torch.arange(1, self.settings["future_targets"] + 1, device=input_ids.device)
        ahead = torch.arange(L, device=input_ids.device)[:, None] + steps  # [L, k]
        return sequence[:, ahead.clamp(max=L + 1)]

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None):
        """Args: input_ids [B, L] left-padded; labels [B, L] next items, -100 where no loss.

        Returns:
            (hidden [B, L, D], loss or None)
        """
        hidden = self.encode(input_ids)
        if labels is None:
            return hidden, None
        keep = labels != -100
        h, target = hidden[keep], labels[keep]
        if self.loss_type == "ce":
            logits = h @ self.item_emb.weight.T if self.settings["softmax_padding"] else self.logits(h)
            if self.settings["future_targets"] == 1:
                return hidden, F.cross_entropy(logits, target)
            future = self.future_items(input_ids, labels)[keep]  # [P, k], 0 past the window's end
            found = future > 0
            log_probs = logits.log_softmax(-1).gather(1, future).masked_fill(~found, 0.0)
            return hidden, -log_probs.sum() / found.sum()
        negatives = torch.randint(1, self.num_items + 1, target.shape, device=target.device)
        pos = (h * self.item_emb(target)).sum(-1)
        neg = (h * self.item_emb(negatives)).sum(-1)
        return hidden, -F.logsigmoid(pos - neg).mean()

