"""Small models named as their sources name them, each with its source's init transcribed.

Each ``*_reference`` function is the source's own init code rewritten for these modules (the
file and function are cited); the parity tests compare a preset against it. Hugging Face
models need no transcription: their constructor runs their own ``_init_weights``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _trunc(tensor: torch.Tensor, std: float, cutoff: float | None = None) -> None:
    if cutoff is None:
        nn.init.trunc_normal_(tensor, mean=0.0, std=std)  # torch's default bounds: +-2
    else:
        nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)


# --------------------------------------------------------------------------- nanoGPT


class NanoLayerNorm(nn.Module):
    """nanoGPT's LayerNorm (model.py): weight 1, optional bias 0; named ``LayerNorm`` there."""

    def __init__(self, dim: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None


NanoLayerNorm.__name__ = "LayerNorm"  # the preset matches nanoGPT's class by its name


class _NanoAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)


class _NanoMLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d)
        self.c_proj = nn.Linear(4 * d, d)


class _NanoBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln_1, self.attn = NanoLayerNorm(d), _NanoAttention(d)
        self.ln_2, self.mlp = NanoLayerNorm(d), _NanoMLP(d)


class NanoGPT(nn.Module):
    """karpathy/nanoGPT model.py GPT's module tree (weights tied as there)."""

    def __init__(self, n_layer: int, d: int = 64, vocab: int = 500, block: int = 128) -> None:
        super().__init__()
        self.n_layer = n_layer
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(vocab, d), "wpe": nn.Embedding(block, d),
            "h": nn.ModuleList(_NanoBlock(d) for _ in range(n_layer)), "ln_f": NanoLayerNorm(d)})
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight


def nanogpt_reference(model: NanoGPT) -> None:
    """nanoGPT model.py: GPT.__init__ (apply(_init_weights), then every c_proj.weight)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
    for name, param in model.named_parameters():
        if name.endswith("c_proj.weight"):
            nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * model.n_layer))


# --------------------------------------------------------------------------- timm ViT


class _TimmAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)


class _TimmMlp(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)


class _TimmBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), _TimmAttention(d)
        self.norm2, self.mlp = nn.LayerNorm(d), _TimmMlp(d)


class _PatchEmbed(nn.Module):
    def __init__(self, d: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, d, patch, stride=patch)


class TimmViT(nn.Module):
    """timm vision_transformer.py VisionTransformer's module tree (class token, no registers)."""

    def __init__(self, depth: int, d: int = 64, image: int = 64, patch: int = 8,
                 classes: int = 100) -> None:
        super().__init__()
        self.patch_embed = _PatchEmbed(d, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, d))
        self.blocks = nn.Sequential(*(_TimmBlock(d) for _ in range(depth)))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)


def timm_vit_reference(model: TimmViT, mode: str) -> None:
    """timm vision_transformer.py: VisionTransformer.init_weights(mode) with
    init_weights_vit_timm (mode '') or init_weights_vit_jax (mode 'jax'), as the constructor
    runs it (needs_reset=False: the Conv2d and LayerNorm keep their own init)."""
    _trunc(model.pos_embed, 0.02)
    nn.init.normal_(model.cls_token, std=1e-6)
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        if mode == "":
            if isinstance(module, nn.Linear):
                _trunc(module.weight, 0.02)
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and name.startswith("head"):
            nn.init.zeros_(module.weight)
            nn.init.constant_(module.bias, 0.0)
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if "mlp" in name:
                nn.init.normal_(module.bias, std=1e-6)
            else:
                nn.init.zeros_(module.bias)
        else:  # timm layers/weight_init.py lecun_normal_: variance_scaling_(fan_in,
            # truncated_normal) = trunc_normal_tf_ cut at +-2 std, std rescaled to the variance
            fan_in = module.weight[0].numel()
            _trunc(module.weight, math.sqrt(1.0 / fan_in) / 0.87962566103423978, 2.0)
            nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------- torchvision ResNet


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                         nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        mid = cout // 4
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                         nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)


class TorchvisionResNet(nn.Module):
    """torchvision/models/resnet.py ResNet's module tree, two stages of ``blocks`` each."""

    def __init__(self, blocks: int, bottleneck: bool = False, width: int = 64) -> None:
        super().__init__()
        block = _Bottleneck if bottleneck else _BasicBlock
        self.conv1, self.bn1 = nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width)
        self.layer1 = nn.Sequential(*(block(width, width) for _ in range(blocks)))
        self.layer2 = nn.Sequential(block(width, 2 * width, 2),
                                    *(block(2 * width, 2 * width) for _ in range(blocks - 1)))
        self.fc = nn.Linear(2 * width, 10)


def torchvision_resnet_reference(model: TorchvisionResNet, zero_init_residual: bool) -> None:
    """torchvision/models/resnet.py ResNet.__init__'s init loop and zero_init_residual."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
    if zero_init_residual:
        for module in model.modules():
            if isinstance(module, _Bottleneck):
                nn.init.constant_(module.bn3.weight, 0)
            elif isinstance(module, _BasicBlock):
                nn.init.constant_(module.bn2.weight, 0)


# --------------------------------------------------------------------------- Fixup ResNet


class _FixupBasic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bias1a, self.bias1b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bias2a, self.bias2b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.scale = nn.Parameter(torch.ones(1))
        self.downsample = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                           if stride != 1 or cin != cout else None)


class _FixupBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        mid = cout // 4
        self.bias1a, self.bias1b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bias2a, self.bias2b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bias3a, self.bias3b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.scale = nn.Parameter(torch.ones(1))
        self.downsample = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                           if stride != 1 or cin != cout else None)


class FixupResNet(nn.Module):
    """hongyi-zhang/Fixup imagenet/models/fixup_resnet_imagenet.py FixupResNet's tree."""

    def __init__(self, blocks: int, bottleneck: bool = False, width: int = 64) -> None:
        super().__init__()
        block = _FixupBottleneck if bottleneck else _FixupBasic
        self.num_layers = 2 * blocks
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bias1 = nn.Parameter(torch.zeros(1))
        self.layer1 = nn.Sequential(*(block(width, width) for _ in range(blocks)))
        self.layer2 = nn.Sequential(block(width, 2 * width, 2),
                                    *(block(2 * width, 2 * width) for _ in range(blocks - 1)))
        self.bias2 = nn.Parameter(torch.zeros(1))
        self.fc = nn.Linear(2 * width, 10)


def fixup_reference(model: FixupResNet) -> None:
    """fixup_resnet_imagenet.py FixupResNet.__init__'s init loop."""
    def he_fan_out(weight: torch.Tensor) -> float:
        return math.sqrt(2 / (weight.shape[0] * math.prod(weight.shape[2:])))

    for module in model.modules():
        if isinstance(module, _FixupBasic):
            nn.init.normal_(module.conv1.weight, mean=0,
                            std=he_fan_out(module.conv1.weight) * model.num_layers ** (-0.5))
            nn.init.constant_(module.conv2.weight, 0)
        elif isinstance(module, _FixupBottleneck):
            for conv in (module.conv1, module.conv2):
                nn.init.normal_(conv.weight, mean=0,
                                std=he_fan_out(conv.weight) * model.num_layers ** (-0.25))
            nn.init.constant_(module.conv3.weight, 0)
        else:
            continue
        if module.downsample is not None:
            nn.init.normal_(module.downsample.weight, mean=0,
                            std=he_fan_out(module.downsample.weight))
    nn.init.constant_(model.fc.weight, 0)
    nn.init.constant_(model.fc.bias, 0)


# --------------------------------------------------------------------------- OLMo


class _OlmoBlock(nn.Module):
    def __init__(self, layer_id: int, d: int, hidden: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.attn_norm, self.ff_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.att_proj = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, hidden, bias=False)
        self.ff_out = nn.Linear(hidden // 2, d, bias=False)  # SwiGLU halves ff_proj's output


class Olmo(nn.Module):
    """allenai/OLMo olmo/model.py OLMo's tree (OLMoSequentialBlock, untied output)."""

    def __init__(self, n_layers: int, d: int = 64, vocab: int = 500, block: int = 128) -> None:
        super().__init__()
        self.d_model = d
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(vocab, d), "wpe": nn.Embedding(block, d),
            "blocks": nn.ModuleList(_OlmoBlock(i, d, 4 * d) for i in range(n_layers)),
            "ln_f": nn.LayerNorm(d), "ff_out": nn.Linear(d, vocab, bias=False)})


def olmo_reference(model: Olmo, init_fn: str) -> None:
    """olmo/model.py OLMo.reset_parameters, OLMoSequentialBlock.reset_parameters and
    OLMoBlock.reset_parameters for init_fn mitchell or full_megatron (init_std 0.02)."""
    d, n_layers = model.d_model, len(model.transformer.blocks)
    mitchell = init_fn == "mitchell"
    for name in ("wte", "wpe"):
        _trunc(model.transformer[name].weight, 1 / math.sqrt(d) if mitchell else 0.02, 3.0)
    _trunc(model.transformer.ff_out.weight, 1 / math.sqrt(d), 3.0)
    for block in model.transformer.blocks:
        std = 1 / math.sqrt(d) if mitchell else 0.02
        _trunc(block.att_proj.weight, std, 3.0)
        _trunc(block.ff_proj.weight, std, 3.0)
        if mitchell:
            attn_out_std = 1 / math.sqrt(2 * d * (block.layer_id + 1))
            ff_out_std = 1 / math.sqrt(2 * block.ff_out.in_features * (block.layer_id + 1))
        else:
            attn_out_std = ff_out_std = 0.02 / math.sqrt(2.0 * n_layers)
        _trunc(block.attn_out.weight, attn_out_std, 3.0)
        _trunc(block.ff_out.weight, ff_out_std, 3.0)


# --------------------------------------------------------------------------- torchtitan Llama 3


class _TitanAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.wq, self.wk = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.wv, self.wo = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)


class _TitanFeedForward(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d, bias=False)
        self.w3 = nn.Linear(d, hidden, bias=False)


class _TitanBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.attention, self.feed_forward = _TitanAttention(d), _TitanFeedForward(d, 4 * d)
        self.attention_norm, self.ffn_norm = nn.RMSNorm(d), nn.RMSNorm(d)


class TitanLlama3(nn.Module):
    """pytorch/torchtitan torchtitan/models/llama3/model.py Transformer's tree."""

    def __init__(self, n_layers: int, d: int = 64, vocab: int = 500) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab, d)
        self.layers = nn.ModuleDict({str(i): _TitanBlock(d) for i in range(n_layers)})
        self.norm = nn.RMSNorm(d)
        self.output = nn.Linear(d, vocab, bias=False)


def titan_reference(model: TitanLlama3) -> None:
    """torchtitan llama3 model.py Transformer.init_weights with depth_init=True."""
    nn.init.normal_(model.tok_embeddings.weight)
    for layer_id, block in enumerate(model.layers.values()):
        std = 0.02 / (2 * (layer_id + 1)) ** 0.5
        for linear in (block.attention.wq, block.attention.wk, block.attention.wv):
            nn.init.trunc_normal_(linear.weight, mean=0.0, std=0.02)
        nn.init.trunc_normal_(block.attention.wo.weight, mean=0.0, std=std)
        nn.init.trunc_normal_(block.feed_forward.w1.weight, mean=0.0, std=0.02)
        for linear in (block.feed_forward.w2, block.feed_forward.w3):
            nn.init.trunc_normal_(linear.weight, mean=0.0, std=std)
    final_out_std = model.output.in_features ** -0.5
    _trunc(model.output.weight, final_out_std, 3.0)


# --------------------------------------------------------------------------- fairseq encoder


class _FairseqAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.k_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.q_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)


class _FairseqLayer(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.self_attn = _FairseqAttention(d)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.final_layer_norm = nn.LayerNorm(d)


class FairseqEncoder(nn.Module):
    """fairseq TransformerEncoder's tree (as T-Fixup and torchscale name it)."""

    def __init__(self, n_layers: int, d: int = 64, vocab: int = 500) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d, padding_idx=1)
        self.layers = nn.ModuleList(_FairseqLayer(d) for _ in range(n_layers))


class TorchEncoder(nn.Module):
    """torch.nn.TransformerEncoder with an embedding: packed q, k, v in ``in_proj_weight``."""

    def __init__(self, n_layers: int, d: int = 64, vocab: int = 500) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)


def _attention_weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(role, weight) for q, k, v, out and the MLP, for both layouts above."""
    found: list[tuple[str, torch.Tensor]] = []
    for module in model.modules():
        if isinstance(module, _FairseqLayer):
            attn = module.self_attn
            found += [("q", attn.q_proj.weight), ("k", attn.k_proj.weight),
                      ("v", attn.v_proj.weight), ("out", attn.out_proj.weight),
                      ("mlp", module.fc1.weight), ("mlp", module.fc2.weight)]
        elif isinstance(module, nn.TransformerEncoderLayer):
            attn = module.self_attn
            q, k, v = attn.in_proj_weight.data.chunk(3)
            found += [("q", q), ("k", k), ("v", v), ("out", attn.out_proj.weight),
                      ("mlp", module.linear1.weight), ("mlp", module.linear2.weight)]
    return found


def _zero_biases(model: nn.Module) -> None:
    for name, param in model.named_parameters():
        if name.endswith("bias") and "norm" not in name:
            nn.init.zeros_(param)


def deepnet_reference(model: nn.Module, n_layers: int) -> None:
    """DeepNet (arXiv:2203.00555) Figure 2's deepnorm_init; embeddings N(0, d**-1/2) as
    microsoft/torchscale's encoder builds them."""
    beta = (8 * n_layers) ** -0.25
    with torch.no_grad():
        for role, weight in _attention_weights(model):
            nn.init.xavier_normal_(weight, gain=1.0 if role in ("q", "k") else beta)
        embed = model.embed_tokens
        nn.init.normal_(embed.weight, mean=0, std=embed.embedding_dim ** -0.5)
        if embed.padding_idx is not None:
            nn.init.zeros_(embed.weight[embed.padding_idx])
    _zero_biases(model)


def t_fixup_reference(model: nn.Module, n_layers: int) -> None:
    """T-Fixup's encoder: fairseq's Xavier init (multihead_attention.py reset_parameters,
    transformer_layer.py Linear), then TransformerEncoderLayer.fixup_initialization and
    TransformerEncoder's embedding scaling (layer6ai-labs/T-Fixup)."""
    scale = 0.67 * n_layers ** (-1.0 / 4.0)
    with torch.no_grad():
        for role, weight in _attention_weights(model):
            if role in ("q", "k", "v"):
                nn.init.xavier_uniform_(weight, gain=1 / math.sqrt(2))
            else:
                nn.init.xavier_uniform_(weight)
            if role in ("out", "mlp"):
                weight.mul_(scale)
            elif role == "v":
                weight.mul_(scale * 2**0.5)
        embed = model.embed_tokens
        nn.init.normal_(embed.weight, mean=0, std=embed.embedding_dim ** -0.5)
        if embed.padding_idx is not None:
            nn.init.zeros_(embed.weight[embed.padding_idx])
        embed.weight.mul_((9 * n_layers) ** (-1 / 4))
    _zero_biases(model)
