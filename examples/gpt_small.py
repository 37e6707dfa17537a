"""A small GPT-style language model initialized by the ``gpt2`` preset.

GPT-2 (Radford et al. 2019) initializes every Linear and Embedding weight from N(0, 0.02),
biases at zero, LayerNorm at 1/0, and scales the weights of the residual projections
(``attn.c_proj``, ``mlp.c_proj``) by 1/sqrt(2 * n_layer), so that the residual stream's variance
does not grow with depth. The module names below follow GPT-2's, which the preset matches.

The task: next-token prediction on sequences that repeat a random motif of 4 tokens, which a
model learns quickly once attention finds the period.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import common_parser, print_final_loss, trainer_for

from lightning_init import InitCallback


def motif_sequences(num_samples: int = 1024, length: int = 32, vocab: int = 16) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    motifs = torch.randint(vocab, (num_samples, 4), generator=generator)
    tokens = motifs.repeat(1, length // 4 + 1)[:, : length + 1]
    return TensorDataset(tokens[:, :-1], tokens[:, 1:])


class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=2)
        q, k, v = (t.view(batch, time, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(batch, time, width))


class MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(nn.functional.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(L.LightningModule):
    def __init__(self, vocab: int = 16, width: int = 64, n_layer: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(64, width)
        self.h = nn.ModuleList(Block(width, heads) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.wte(tokens) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        tokens, targets = batch
        logits = self(tokens)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def main(argv: list[str] | None = None) -> None:
    args = common_parser(__doc__.splitlines()[0]).parse_args(argv)
    L.seed_everything(0, verbose=False)
    model = TinyGPT()
    trainer = trainer_for("gpt_small", args, [InitCallback(policy="gpt2")])
    trainer.fit(model, DataLoader(motif_sequences(), batch_size=32, shuffle=True))
    print_final_loss(trainer)


if __name__ == "__main__":
    main()
