"""A zoo of small hand-written PyTorch models (no ``transformers``), issue 23.

Each case builds, under a seed, a model with PyTorch's default init, one batch, and a
learnable synthetic task: ``loss_fn(output, target)`` with ``target`` from a fixed rule on the
inputs (labels from a linear projection) or a fixed teacher (the same architecture under seed
1000, its output scaled to unit std).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrizations

B = 16


@dataclass(frozen=True)
class TorchCase:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator], Any]
    loss_fn: Callable[[Any, Any], torch.Tensor]
    target: Callable[[Any], Any]  # target(inputs)
    num_classes: int | None = None

    def __str__(self) -> str:
        return self.name


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear_labels(x: torch.Tensor, classes: int) -> torch.Tensor:
    flat = x.float().reshape(x.shape[0], -1)
    proj = torch.randn(flat.shape[1], classes, generator=_g(99))
    return (flat @ proj).argmax(-1)


# ---------------------------------------------------------------- models


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down1, self.down2, self.mid = _conv_bn(3, 8), _conv_bn(8, 16), _conv_bn(16, 32)
        self.up2, self.dec2 = nn.ConvTranspose2d(32, 16, 2, stride=2), _conv_bn(32, 16)
        self.up1, self.dec1 = nn.ConvTranspose2d(16, 8, 2, stride=2), _conv_bn(16, 8)
        self.out = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(x)
        d2 = self.down2(F.max_pool2d(d1, 2))
        m = self.mid(F.max_pool2d(d2, 2))
        u2 = self.dec2(torch.cat([self.up2(m), d2], 1))
        u1 = self.dec1(torch.cat([self.up1(u2), d1], 1))
        return self.out(u1)


class VAE(nn.Module):
    def __init__(self, latent: int = 8) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1),
                                 nn.ReLU(), nn.Flatten())
        self.mu, self.logvar = nn.Linear(32 * 16, latent), nn.Linear(32 * 16, latent)
        self.fc = nn.Linear(latent, 32 * 16)
        self.dec = nn.Sequential(nn.ReLU(), nn.Unflatten(1, (32, 4, 4)),
                                 nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(16, 1, 4, 2, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.dec(self.fc(z)), mu, logvar


def vae_loss(out: Any, x: torch.Tensor) -> torch.Tensor:
    recon, mu, logvar = out
    bce = F.binary_cross_entropy(recon, x, reduction="sum") / x.shape[0]
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
    return bce + kl


class DCGANGenerator(nn.Module):
    def __init__(self, nz: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, 32, 4, 1, 0, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.ConvTranspose2d(16, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class SNDiscriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        sn = parametrizations.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(3, 16, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(16, 32, 4, 2, 1)), nn.LeakyReLU(0.2),
            nn.Flatten(), sn(nn.Linear(32 * 16, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class TCNBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dilation: int) -> None:
        super().__init__()
        wn = parametrizations.weight_norm
        self.pad = 2 * dilation
        self.conv1 = wn(nn.Conv1d(cin, cout, 3, dilation=dilation))
        self.conv2 = wn(nn.Conv1d(cout, cout, 3, dilation=dilation))
        self.down = nn.Conv1d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(F.pad(x, (self.pad, 0))))
        h = F.relu(self.conv2(F.pad(h, (self.pad, 0))))
        res = x if self.down is None else self.down(x)
        return F.relu(h + res)


class TCN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(TCNBlock(4, 16, 1), TCNBlock(16, 16, 2), TCNBlock(16, 16, 4))
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x)[:, :, -1])


class RNNClassifier(nn.Module):
    def __init__(self, cell: type[nn.Module], packed: bool) -> None:
        super().__init__()
        self.packed = packed
        self.emb = nn.Embedding(50, 16)
        self.rnn = cell(16, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens)
        if self.packed:
            x = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                  enforce_sorted=False)
            _, h = self.rnn(x)
        else:
            _, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h
        return self.head(h[-1])


class Seq2Seq(nn.Module):
    def __init__(self, vocab: int = 20, d: int = 32) -> None:
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(vocab, d), nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, 12, d))
        self.tf = nn.Transformer(d, 4, 2, 2, 64, dropout=0.0, batch_first=True)
        self.out = nn.Linear(d, vocab)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        mask = self.tf.generate_square_subsequent_mask(tgt.shape[1])
        h = self.tf(self.src_emb(src) + self.pos[:, :src.shape[1]],
                    self.tgt_emb(tgt) + self.pos[:, :tgt.shape[1]], tgt_mask=mask,
                    tgt_is_causal=True)
        return self.out(h)


class Attn(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class PreNormBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(d), Attn(d, 4), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int = 32, d: int = 32, n: int = 3) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(16, d)
        self.blocks = nn.Sequential(*[PreNormBlock(d) for _ in range(n)])
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.head(self.ln(self.blocks(self.tok(idx) + self.pos(pos))))


class MoE(nn.Module):
    def __init__(self, d: int = 32, experts: int = 4, k: int = 2) -> None:
        super().__init__()
        self.k, self.router = k, nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))
            for _ in range(experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, index = torch.topk(F.softmax(self.router(x), -1), self.k, -1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.where(index == e)
            if rows.numel():
                y = expert(x[rows]) * weights[rows, slot, None]
                out.index_add_(0, rows, y)
        return out


class MoENet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.norm1, self.moe1 = nn.Linear(12, 32), nn.LayerNorm(32), MoE()
        self.norm2, self.moe2 = nn.LayerNorm(32), MoE()
        self.head = nn.Linear(32, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.moe1(self.norm1(h))
        h = h + self.moe2(self.norm2(h))
        return self.head(h)


class MultiTask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.cls, self.reg = nn.Linear(64, 3), nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {"logits": self.cls(h), "value": self.reg(h)}


def multitask_loss(out: Any, target: Any) -> torch.Tensor:
    labels, values = target
    return F.cross_entropy(out["logits"], labels) + F.mse_loss(out["value"], values)


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, growth, 3, padding=1,
                                                            bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class DenseNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.block = nn.Sequential(*[DenseLayer(16 + 8 * i, 8) for i in range(4)])
        self.trans = nn.Sequential(nn.BatchNorm2d(48), nn.ReLU(), nn.Conv2d(48, 24, 1, bias=False),
                                   nn.AvgPool2d(2))
        self.block2 = nn.Sequential(*[DenseLayer(24 + 8 * i, 8) for i in range(3)])
        self.norm, self.head = nn.BatchNorm2d(48), nn.Linear(48, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block2(self.trans(self.block(self.stem(x))))
        return self.head(F.relu(self.norm(h)).mean((2, 3)))


class Tabular(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cats = nn.ModuleList(nn.Embedding(n, 8) for n in (10, 7, 5))
        self.bag = nn.EmbeddingBag(40, 8, mode="mean")
        self.mlp = nn.Sequential(nn.Linear(3 * 8 + 8 + 6, 64), nn.ReLU(), nn.Linear(64, 64),
                                 nn.ReLU(), nn.Linear(64, 2))

    def forward(self, cats: torch.Tensor, bag: torch.Tensor, nums: torch.Tensor) -> torch.Tensor:
        parts = [emb(cats[:, i]) for i, emb in enumerate(self.cats)]
        return self.mlp(torch.cat([*parts, self.bag(bag), nums], 1))


# ---------------------------------------------------------------- tasks


def _teacher(build: Callable[[], nn.Module], inputs: Any) -> torch.Tensor:
    with torch.random.fork_rng():
        torch.manual_seed(1000)
        teacher = build().eval()
        with torch.no_grad():
            out = teacher(*inputs) if isinstance(inputs, tuple) else teacher(inputs)
    return out / out.std()


def _tokens(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, 50, (B, 12), generator=g), torch.randint(4, 13, (B,), generator=g)


def _copy_target(inputs: Any) -> torch.Tensor:
    src, _ = inputs
    return src.flip(1)


def _seq2seq_inputs(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.randint(1, 20, (B, 10), generator=g)
    tgt = torch.cat([torch.zeros(B, 1, dtype=torch.long), src.flip(1)[:, :-1]], 1)
    return src, tgt


_PERM = torch.randperm(32, generator=_g(5))


def _lm_target(idx: torch.Tensor) -> torch.Tensor:
    return _PERM[idx]


def _ce(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))


def _rnn_labels(inputs: Any) -> torch.Tensor:
    tokens, lengths = inputs
    mask = torch.arange(tokens.shape[1])[None] < lengths[:, None]
    one_hot = F.one_hot(tokens, 50).float() * mask[..., None]
    return linear_labels(one_hot.sum(1) / lengths[:, None], 4)


def _tab_inputs(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cats = torch.stack([torch.randint(0, n, (B,), generator=g) for n in (10, 7, 5)], 1)
    return cats, torch.randint(0, 40, (B, 5), generator=g), torch.randn(B, 6, generator=g)


def _tab_labels(inputs: Any) -> torch.Tensor:
    cats, bag, nums = inputs
    feats = torch.cat([F.one_hot(cats[:, 0], 10), F.one_hot(cats[:, 1], 7),
                       F.one_hot(cats[:, 2], 5), F.one_hot(bag, 40).sum(1), nums], 1).float()
    return linear_labels(feats, 2)


def _unet_target(x: torch.Tensor) -> torch.Tensor:
    return _teacher(UNet, x)


def _gen_target(z: torch.Tensor) -> torch.Tensor:
    return _teacher(DCGANGenerator, z)


def _mt_target(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values = x @ torch.randn(20, 2, generator=_g(3)) / 20 ** 0.5
    return linear_labels(x, 3), values


CASES = (
    TorchCase("unet", UNet, lambda g: torch.randn(B, 3, 16, 16, generator=g), F.mse_loss,
              _unet_target),
    TorchCase("vae", VAE, lambda g: torch.rand(B, 1, 16, 16, generator=g).round(), vae_loss,
              lambda x: x),
    TorchCase("dcgan-g", DCGANGenerator, lambda g: torch.randn(B, 16, 1, 1, generator=g),
              F.mse_loss, _gen_target),
    TorchCase("sn-disc", SNDiscriminator, lambda g: torch.randn(B, 3, 16, 16, generator=g),
              lambda out, y: F.binary_cross_entropy_with_logits(out, y),
              lambda x: linear_labels(x, 2).float()),
    TorchCase("tcn", TCN, lambda g: torch.randn(B, 4, 32, generator=g), F.cross_entropy,
              lambda x: linear_labels(x[:, :, -8:], 5), num_classes=5),
    TorchCase("lstm", lambda: RNNClassifier(nn.LSTM, packed=False), _tokens, F.cross_entropy,
              _rnn_labels, num_classes=4),
    TorchCase("gru-packed", lambda: RNNClassifier(nn.GRU, packed=True), _tokens,
              F.cross_entropy, _rnn_labels, num_classes=4),
    TorchCase("seq2seq", Seq2Seq, _seq2seq_inputs, _ce, _copy_target, num_classes=20),
    TorchCase("gpt-sdpa", TinyGPT, lambda g: torch.randint(0, 32, (B, 16), generator=g), _ce,
              _lm_target, num_classes=32),
    TorchCase("moe", MoENet, lambda g: torch.randn(B, 12, generator=g), F.cross_entropy,
              lambda x: linear_labels(x, 6), num_classes=6),
    TorchCase("multitask", MultiTask, lambda g: torch.randn(B, 20, generator=g), multitask_loss,
              _mt_target),
    TorchCase("densenet", DenseNetLike, lambda g: torch.randn(B, 3, 16, 16, generator=g),
              F.cross_entropy, lambda x: linear_labels(x, 5), num_classes=5),
    TorchCase("tabular", Tabular, _tab_inputs, F.cross_entropy, _tab_labels, num_classes=2),
)


def make(case: TorchCase, seed: int) -> tuple[nn.Module, Any, Any]:
    """The model (PyTorch's default init under ``seed``), its batch and its target."""
    inputs = case.inputs(_g(0))
    torch.manual_seed(seed)
    model = case.build()
    return model, inputs, case.target(inputs)


def call(model: nn.Module, inputs: Any) -> Any:
    return model(*inputs) if isinstance(inputs, tuple) else model(inputs)
