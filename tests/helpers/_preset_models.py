"""Models for the presets' tests: one representative model per preset (``MODELS``)."""

from __future__ import annotations

import _arch
import pytest
import torch
from torch import nn


def mlp():
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def cnn():
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.ConvTranspose2d(32, 8, 3))


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(16, 32, num_layers=2)
        self.head = nn.Linear(32, 4)


class GPTBlock(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_c_proj = nn.Linear(4 * d, d)


class GPT(nn.Module):
    def __init__(self, n_layer=3, d=32):
        super().__init__()
        self.wte = nn.Embedding(100, d)
        self.wpe = nn.Embedding(16, d)
        self.h = nn.ModuleList(GPTBlock(d) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)


class Bert(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.word_embeddings = nn.Embedding(100, d, padding_idx=0)
        self.norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(),
                                                  nn.Linear(4 * d, d), nn.LayerNorm(d))
                                    for _ in range(2))


class LlamaLike(nn.Module):
    """HF LLaMA's names; projections with biases (as Qwen2's q, k, v have)."""

    def __init__(self, d=32):
        super().__init__()
        self.embed_tokens = nn.Embedding(100, d)
        self.q_proj, self.o_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.input_layernorm, self.norm = nn.RMSNorm(d), nn.RMSNorm(d)
        self.lm_head = nn.Linear(d, 100)


class ViTEmbeddings(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 17, d))
        self.projection = nn.Conv2d(3, d, 8, stride=8)


class ViTLike(nn.Module):
    """HF ViT's names (embeddings.cls_token, ...), with a mask token."""

    def __init__(self, d=32):
        super().__init__()
        self.embeddings = ViTEmbeddings(d)
        self.fc1, self.fc2, self.layernorm = nn.Linear(d, 2 * d), nn.Linear(2 * d, d), \
            nn.LayerNorm(d)
        self.classifier = nn.Linear(d, 10)


class TimmViTWithRegisters(_arch.TimmViT):
    def __init__(self):
        super().__init__(2, d=32)
        self.reg_token = nn.Parameter(torch.zeros(1, 4, 32))


def neox():
    transformers = pytest.importorskip("transformers")
    return transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
        vocab_size=100))


MODELS = {
    "pytorch_default": mlp, "kaiming_relu": cnn, "xavier": mlp, "lecun_selu": mlp,
    "dcgan": cnn, "lstm": LSTMNet, "gpt2": GPT, "bert": Bert,
    "bert_tf": Bert, "llama": LlamaLike, "vit": ViTLike, "vit_timm": TimmViTWithRegisters,
    "vit_jax": TimmViTWithRegisters,
    "resnet": lambda: _arch.TorchvisionResNet(1, width=16),
    "resnet_zero_init_last": lambda: _arch.TorchvisionResNet(1, width=16),
    "olmo_mitchell": lambda: _arch.Olmo(2, d=32, vocab=100),
    "olmo_full_megatron": lambda: _arch.Olmo(2, d=32, vocab=100),
    "llama3_depth_init": lambda: _arch.TitanLlama3(2, d=32, vocab=100), "neox": neox,
    "deepnet": lambda: _arch.FairseqEncoder(2, d=32, vocab=100),
    "t_fixup": lambda: _arch.FairseqEncoder(2, d=32, vocab=100),
    "fixup": lambda: _arch.FixupResNet(1, width=16),
}
