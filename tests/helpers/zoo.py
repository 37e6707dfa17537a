"""A zoo of small real models for the init check: healthy families and realistic breakages.

Every model is built from a ``transformers`` config (2-4 layers, hidden size 32-128, vocabulary
at most 500), initialized by the library's own ``_init_weights`` under a fixed seed, and fed a
batch of 8 samples that the builder makes. A breakage takes a healthy model and spoils one group
of parameters the way people do by mistake; it names that group by module-name globs and the
words the check's advice must (and must not) contain.

Nothing is downloaded (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BATCH, SEQ, VOCAB, IMAGE = 8, 16, 500, 32

__all__ = ["BREAKAGES", "HEALTHY", "ZooCase", "build", "in_group"]


@dataclass(frozen=True)
class ZooCase:
    """One model of the zoo.

    Attributes:
        name: the case's id (``"gpt2"``, ``"gpt2-conv1d-normal"``).
        make: ``make() -> (model, inputs)``, seeded.
        forward: ``forward(model, inputs) -> output`` when ``model(**inputs)`` is not the call.
        group: breakages only: globs of the qualified module names that were spoiled; a
            problem must name a module that matches one of them.
        advice: words the broken group's advice must contain (case-insensitive, any one of
            each tuple).
        not_advice: words that advice must not contain.
    """

    name: str
    make: Callable[[], tuple[nn.Module, Any]]
    forward: Callable[[nn.Module, Any], Any] | None = None
    group: tuple[str, ...] = ()
    advice: tuple[tuple[str, ...], ...] = ()
    not_advice: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


def in_group(name: str, globs: tuple[str, ...]) -> bool:
    """Whether a qualified module name lies inside one of the globs (itself or a child).

    Example:
        >>> in_group("transformer.h.0.mlp.c_fc", ("transformer.h.*",))
        True
        >>> in_group("transformer.h.0.mlp", ("transformer.h.0.mlp.*",))
        True
        >>> in_group("lm_head", ("transformer.h.*",))
        False
    """
    return any(fnmatchcase(name, glob) or (glob.endswith(".*") and name == glob[:-2])
               for glob in globs)


def build(case: ZooCase) -> tuple[nn.Module, Any]:
    """The case's model and inputs, built under a fixed seed."""
    torch.manual_seed(0)
    return case.make()


# ------------------------------------------------------------------------------------ inputs


def _tokens(vocab: int = VOCAB, seq: int = SEQ) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(5, vocab, (BATCH, seq), generator=generator)


def _padded_mask(seq: int = SEQ) -> torch.Tensor:
    """Attention mask with padding: sample i keeps its first seq - i positions."""
    mask = torch.ones(BATCH, seq, dtype=torch.long)
    for i in range(BATCH):
        mask[i, seq - i:] = 0
    return mask


def _text(vocab: int = VOCAB, padded: bool = True) -> dict[str, torch.Tensor]:
    inputs = {"input_ids": _tokens(vocab)}
    if padded:
        inputs["attention_mask"] = _padded_mask()
    return inputs


def _images(channels: int = 3, size: int = IMAGE) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return {"pixel_values": torch.randn(BATCH, channels, size, size, generator=generator)}


# ---------------------------------------------------------------------------- text families


def _bert() -> tuple[nn.Module, Any]:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                        intermediate_size=128, vocab_size=VOCAB, num_labels=3,
                        max_position_embeddings=64)
    return BertForSequenceClassification(config), _text()


def _bert_mlm() -> tuple[nn.Module, Any]:
    """BERT's masked-LM head: the decoder is tied to the word embeddings."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                        intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=64)
    return BertForMaskedLM(config), _text()


def _roberta() -> tuple[nn.Module, Any]:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                           intermediate_size=128, vocab_size=VOCAB, num_labels=3,
                           max_position_embeddings=64)
    return RobertaForSequenceClassification(config), _text()


def _electra() -> tuple[nn.Module, Any]:
    from transformers import ElectraConfig, ElectraForSequenceClassification

    config = ElectraConfig(num_hidden_layers=2, embedding_size=32, hidden_size=64,
                           num_attention_heads=4, intermediate_size=128, vocab_size=VOCAB,
                           num_labels=3, max_position_embeddings=64)
    return ElectraForSequenceClassification(config), _text()


def _albert() -> tuple[nn.Module, Any]:
    from transformers import AlbertConfig, AlbertForSequenceClassification

    config = AlbertConfig(num_hidden_layers=2, embedding_size=32, hidden_size=64,
                          num_attention_heads=4, intermediate_size=128, vocab_size=VOCAB,
                          num_labels=3, max_position_embeddings=64)
    return AlbertForSequenceClassification(config), _text()


def _gpt2() -> tuple[nn.Module, Any]:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=64,
                        use_cache=False, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config), _text(padded=False)


def _llama() -> tuple[nn.Module, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, vocab_size=VOCAB,
                         max_position_embeddings=64, use_cache=False)
    return LlamaForCausalLM(config), _text(padded=False)


def _qwen2() -> tuple[nn.Module, Any]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, vocab_size=VOCAB,
                         max_position_embeddings=64, use_cache=False)
    return Qwen2ForCausalLM(config), _text(padded=False)


def _mistral() -> tuple[nn.Module, Any]:
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=128, vocab_size=VOCAB,
                           max_position_embeddings=64, use_cache=False)
    return MistralForCausalLM(config), _text(padded=False)


def _opt() -> tuple[nn.Module, Any]:
    """OPT: post-ReLU feed-forward layers, learned positions."""
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, ffn_dim=128,
                       vocab_size=VOCAB, max_position_embeddings=64, word_embed_proj_dim=64,
                       use_cache=False)
    return OPTForCausalLM(config), _text()


def _bart() -> tuple[nn.Module, Any]:
    """BART: encoder-decoder, learned positions computed from the input's shape."""
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4,
                        encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
                        use_cache=False)
    return BartForConditionalGeneration(config), _text()


def _t5() -> tuple[nn.Module, Any]:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                      num_heads=4, use_cache=False)
    generator = torch.Generator().manual_seed(3)
    inputs = {**_text(), "decoder_input_ids": torch.randint(5, VOCAB, (BATCH, 8),
                                                            generator=generator)}
    return T5ForConditionalGeneration(config), inputs


# -------------------------------------------------------------------------- vision families


def _vit() -> tuple[nn.Module, Any]:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, image_size=IMAGE, patch_size=8, num_labels=10)
    return ViTForImageClassification(config), _images()


def _resnet() -> tuple[nn.Module, Any]:
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[2, 1],
                          layer_type="basic", num_labels=10)
    return ResNetForImageClassification(config), _images()


def _resnet_bottleneck() -> tuple[nn.Module, Any]:
    from transformers import ResNetConfig, ResNetModel

    config = ResNetConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1],
                          layer_type="bottleneck")
    return ResNetModel(config), _images()


def _resnet_zero_init_last() -> tuple[nn.Module, Any]:
    """timm's ``zero_init_last`` (Goyal et al. 2017): each block's last BatchNorm weight 0."""
    model, inputs = _resnet()
    with torch.no_grad():
        for stage in model.resnet.encoder.stages:
            for block in stage.layers:
                block.layer[-1].normalization.weight.zero_()
    return model, inputs


def _vit_zero_head() -> tuple[nn.Module, Any]:
    """A zero-initialized classifier head (timm's ViT ``head_init_scale=0``, fine-tuning)."""
    model, inputs = _vit()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    return model, inputs


def _regnet() -> tuple[nn.Module, Any]:
    """RegNet: kaiming fan_out convolutions, squeeze-and-excitation (a 1x1 conv squeezing 16
    channels into 2 has a forward gain of sqrt(2 * 16 / 2), by design)."""
    from transformers import RegNetConfig, RegNetForImageClassification

    config = RegNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                          groups_width=8, num_labels=10)
    return RegNetForImageClassification(config), _images()


def _dinov2() -> tuple[nn.Module, Any]:
    """DINOv2: LayerScale at 1 (a learnable per-channel gate on each branch)."""
    from transformers import Dinov2Config, Dinov2ForImageClassification

    config = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          mlp_ratio=2, image_size=IMAGE, patch_size=8, num_labels=10)
    return Dinov2ForImageClassification(config), _images()


def _convnext() -> tuple[nn.Module, Any]:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(num_stages=2, hidden_sizes=[32, 64], depths=[2, 1], num_labels=10,
                            image_size=IMAGE)
    return ConvNextForImageClassification(config), _images()


def _mobilenet_v2() -> tuple[nn.Module, Any]:
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    config = MobileNetV2Config(image_size=IMAGE, depth_multiplier=0.35, num_labels=10)
    return MobileNetV2ForImageClassification(config), _images()


def _swin() -> tuple[nn.Module, Any]:
    from transformers import SwinConfig, SwinForImageClassification

    config = SwinConfig(image_size=IMAGE, patch_size=4, embed_dim=32, depths=[1, 1],
                        num_heads=[2, 4], window_size=4, num_labels=10)
    return SwinForImageClassification(config), _images()


HEALTHY: list[ZooCase] = [
    ZooCase("bert", _bert),
    ZooCase("bert-mlm", _bert_mlm),
    ZooCase("roberta", _roberta),
    ZooCase("electra", _electra),
    ZooCase("albert", _albert),
    ZooCase("gpt2", _gpt2),
    ZooCase("llama", _llama),
    ZooCase("qwen2", _qwen2),
    ZooCase("mistral", _mistral),
    ZooCase("opt", _opt),
    ZooCase("bart", _bart),
    ZooCase("t5", _t5),
    ZooCase("vit", _vit),
    ZooCase("resnet", _resnet),
    ZooCase("resnet-bottleneck", _resnet_bottleneck),
    ZooCase("resnet-zero-init-last", _resnet_zero_init_last),
    ZooCase("vit-zero-head", _vit_zero_head),
    ZooCase("regnet", _regnet),
    ZooCase("dinov2", _dinov2),
    ZooCase("convnext", _convnext),
    ZooCase("mobilenet-v2", _mobilenet_v2),
    ZooCase("swin", _swin),
]


# ------------------------------------------------------------------------------- breakages


def _spoil(make: Callable[[], tuple[nn.Module, Any]],
           spoil: Callable[[nn.Module], None]) -> Callable[[], tuple[nn.Module, Any]]:
    def spoiled() -> tuple[nn.Module, Any]:
        model, inputs = make()
        with torch.no_grad():
            spoil(model)
        return model, inputs

    return spoiled


def _weights(model: nn.Module, types: tuple[type, ...], draw: Callable[[torch.Tensor], Any],
             under: str = "") -> None:
    for name, module in model.named_modules():
        if isinstance(module, types) and name.startswith(under):
            draw(module.weight)


def _conv1d() -> type:
    from transformers.pytorch_utils import Conv1D

    return Conv1D


def _norms() -> tuple[type, ...]:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    return (nn.LayerNorm, nn.modules.batchnorm._BatchNorm, LlamaRMSNorm)


def _normal(std: float) -> Callable[[torch.Tensor], Any]:
    return lambda weight: weight.normal_(0.0, std)


_EVERY_WEIGHT = (nn.Linear, nn.Conv2d, nn.Embedding)

BREAKAGES: list[ZooCase] = [
    ZooCase(
        "gpt2-conv1d-normal",
        _spoil(_gpt2, lambda m: _weights(m, (_conv1d(),), _normal(1.0))),
        group=("transformer.h.*",),
        advice=(("std", "init", "scale"),),
    ),
    ZooCase(
        "llama-std-1e-4",
        _spoil(_llama, lambda m: _weights(m, _EVERY_WEIGHT, _normal(1e-4))),
        group=("model.*", "lm_head"),
        advice=(("std", "init", "scale"),),
    ),
    ZooCase(
        "gpt2-wte-std-100",
        _spoil(_gpt2, lambda m: m.transformer.wte.weight.normal_(0.0, 100.0)),
        group=("transformer.wte", "lm_head", "transformer.h.0.*", "transformer.ln_f"),
        advice=(("embedding", "wte"),),
        not_advice=("scale the last layer's weights down",),
    ),
    ZooCase(
        "llama-linear-normal",
        _spoil(_llama, lambda m: _weights(m, (nn.Linear,), _normal(1.0))),
        group=("model.layers.*", "lm_head"),
        advice=(("std", "init", "scale"),),
    ),
    ZooCase(
        "convnext-linear-normal",
        _spoil(_convnext, lambda m: _weights(m, (nn.Linear,), _normal(1.0))),
        group=("convnext.encoder.*", "classifier"),
        advice=(("std", "init", "scale"),),
    ),
    ZooCase(
        "bert-mlm-word-embeddings-std-100",
        _spoil(_bert_mlm, lambda m: m.bert.embeddings.word_embeddings.weight.normal_(0.0, 100.0)),
        group=("bert.embeddings.word_embeddings", "cls.predictions.decoder"),
        advice=(("embedding", "word_embeddings"),),
        not_advice=("tanh", "scale the last layer's weights down"),
    ),
    ZooCase(
        "bert-normal-everywhere",
        _spoil(_bert, lambda m: _weights(m, _EVERY_WEIGHT, _normal(1.0))),
        group=("bert.*", "classifier"),
        advice=(("std", "init", "scale"),),
    ),
    ZooCase(
        "vit-std-1e-4-everywhere",
        _spoil(_vit, lambda m: _weights(m, (nn.Linear, nn.Conv2d), _normal(1e-4))),
        group=("vit.*", "classifier"),
        advice=(("std", "init", "scale"),),
    ),
    ZooCase(
        "gpt2-norm-weights-zero",
        _spoil(_gpt2, lambda m: _weights(m, _norms(), lambda w: w.zero_())),
        group=("transformer.*", "lm_head"),
        advice=(("weight 1", "weights 1", "ones", "to 1"),),
        not_advice=("kaiming", "xavier"),
    ),
    ZooCase(
        "resnet-every-bn-weight-zero",
        _spoil(_resnet, lambda m: _weights(m, _norms(), lambda w: w.zero_())),
        group=("resnet.embedder.*",),
        advice=(("weight 1", "weights 1", "ones", "to 1"),),
        not_advice=("kaiming", "xavier"),
    ),
    ZooCase(
        "resnet-bias-minus-10-before-relu",
        _spoil(_resnet, lambda m: m.resnet.embedder.embedder.normalization.bias.fill_(-10.0)),
        group=("resnet.embedder.*",),
        advice=(("bias",),),
    ),
    ZooCase(
        "gpt2-dead-mlp-branch",
        _spoil(_gpt2, lambda m: [m.transformer.h[1].mlp.c_fc.weight.zero_(),
                                 m.transformer.h[1].mlp.c_proj.weight.zero_()]),
        group=("transformer.h.1.mlp.*",),
        advice=(("zero", "dead"),),
    ),
    ZooCase(
        "resnet-dead-branch",
        _spoil(_resnet, lambda m: [
            m.resnet.encoder.stages[0].layers[1].layer[1].convolution.weight.zero_(),
            m.resnet.encoder.stages[0].layers[1].layer[1].normalization.weight.zero_()]),
        group=("resnet.encoder.stages.0.layers.1.*",),
        advice=(("zero", "dead"),),
    ),
    ZooCase(
        "bert-pooler-saturated",
        _spoil(_bert, lambda m: m.bert.pooler.dense.weight.normal_(0.0, 1.0)),
        group=("bert.pooler.*",),
        advice=(("tanh", "xavier", "saturat"),),
    ),
    ZooCase(
        "opt-fc1-bias-minus-10",
        _spoil(_opt, lambda m: [layer.fc1.bias.fill_(-10.0)
                                for layer in m.model.decoder.layers]),
        group=("model.decoder.layers.*",),
        advice=(("bias",),),
    ),
    ZooCase(
        "mistral-attention-normal",
        _spoil(_mistral, lambda m: _weights(m, (nn.Linear,), _normal(1.0), "model.layers.0.")),
        group=("model.layers.0.*",),
        advice=(("std", "init", "scale"),),
    ),
    ZooCase(
        "bart-embedding-std-100",
        _spoil(_bart, lambda m: m.model.shared.weight.normal_(0.0, 100.0)),
        group=("model.shared", "model.encoder.embed_tokens", "model.decoder.embed_tokens",
               "lm_head"),
        advice=(("embedding",),),
        not_advice=("scale the last layer's weights down",),
    ),
    ZooCase(
        "t5-normal-everywhere",
        _spoil(_t5, lambda m: _weights(m, _EVERY_WEIGHT, _normal(1.0))),
        group=("encoder.*", "decoder.*", "shared", "lm_head"),
        advice=(("std", "init", "scale"),),
    ),
]
