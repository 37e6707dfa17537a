"""A zoo of small real models for the init check: healthy families and realistic breakages.

Every model is built from a ``transformers`` config (2-4 layers, hidden size 32-128, vocabulary
at most 500), initialized by the library's own ``_init_weights`` under a fixed seed, and fed a
batch of 8 samples that the builder makes. The wider zoo (the second block, issues 23 and 24)
adds hand-built models where ``transformers`` has none (an MLP-Mixer) and LightningModules
checked the way ``InitCallback`` checks them (:func:`check`).

A breakage takes a healthy model and spoils one group of parameters the way people do by
mistake; it names that group by module-name globs and the words the check's advice must (and
must not) contain.

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

__all__ = ["BREAKAGES", "HEALTHY", "WIDER_BREAKAGES", "WIDER_HEALTHY", "MlpMixer", "ZooCase",
           "build", "check", "in_group"]


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


# ==================================================================================================
# The wider zoo (issues 23 and 24): families that no test held before, their breakages, and the
# valid programs the check judged wrong. Kept apart from the entries above so that merges stay
# simple; ``HEALTHY`` and ``BREAKAGES`` are extended at the end of this block.
#
# Extra keys a case may carry (``ZooCase.extra``):
#   "loss": ``loss(model, inputs) -> scalar``, the model's own training loss where the
#       transformers conventions of the tests (``labels=``, ``.loss``) do not give it.
#   "lightning": the model is a LightningModule and ``inputs`` its training batch: it is
#       checked the way ``InitCallback`` checks it (``training_step``, the classes guessed
#       from the batch), see :func:`check`; ``forward`` runs ``training_step``.
# ==================================================================================================

AUDIO = 640  # samples of a waveform: 31 frames after the small feature encoder below


def _waveform() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(4)
    return {"input_values": torch.randn(BATCH, AUDIO, generator=generator)}


def _class_labels(classes: int, rows: int = BATCH) -> torch.Tensor:
    return torch.randint(0, classes, (rows,), generator=torch.Generator().manual_seed(7))


# ---------------------------------------------------------------- decoders without positions


def _gemma() -> tuple[nn.Module, Any]:
    """Gemma: tied head, rotary positions, RMSNorm computing ``x_hat * (1 + w)`` with w = 0."""
    from transformers import GemmaConfig, GemmaForCausalLM

    config = GemmaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, intermediate_size=128,
                         vocab_size=VOCAB, max_position_embeddings=64, use_cache=False)
    return GemmaForCausalLM(config), _text(padded=False)


def _gemma2() -> tuple[nn.Module, Any]:
    """Gemma2: sandwich norms (a norm after each branch, before the add), soft-capped logits
    ``tanh(logits / 30) * 30`` and attention scores, tied head."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=16, intermediate_size=128,
                          vocab_size=VOCAB, max_position_embeddings=64, sliding_window=8,
                          query_pre_attn_scalar=16, use_cache=False)
    return Gemma2ForCausalLM(config), _text(padded=False)


def _gemma3() -> tuple[nn.Module, Any]:
    """Gemma3 (text): sandwich norms and per-head query/key norms, tied head."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, intermediate_size=128,
                              vocab_size=VOCAB, max_position_embeddings=64, sliding_window=8,
                              query_pre_attn_scalar=16, use_cache=False)
    return Gemma3ForCausalLM(config), _text(padded=False)


def _olmo2() -> tuple[nn.Module, Any]:
    """OLMo 2: the norms sit after each branch, before the add (no norm before the branch)."""
    from transformers import Olmo2Config, Olmo2ForCausalLM

    config = Olmo2Config(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, vocab_size=VOCAB,
                         max_position_embeddings=64, use_cache=False)
    return Olmo2ForCausalLM(config), _text(padded=False)


def _falcon() -> tuple[nn.Module, Any]:
    """Falcon: parallel attention and MLP off one norm, rotary positions, tied head."""
    from transformers import FalconConfig, FalconForCausalLM

    config = FalconConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                          vocab_size=VOCAB, max_position_embeddings=64, use_cache=False)
    return FalconForCausalLM(config), _text(padded=False)


def _bloom() -> tuple[nn.Module, Any]:
    """BLOOM: ALiBi positions, a LayerNorm on the word embeddings, tied head."""
    from transformers import BloomConfig, BloomForCausalLM

    config = BloomConfig(n_layer=2, hidden_size=64, n_head=4, vocab_size=VOCAB, use_cache=False)
    return BloomForCausalLM(config), _text(padded=False)


def _phi() -> tuple[nn.Module, Any]:
    """Phi: an untied head (with a bias), partial rotary positions, parallel branches."""
    from transformers import PhiConfig, PhiForCausalLM

    config = PhiConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                       intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=64,
                       partial_rotary_factor=0.5, use_cache=False)
    return PhiForCausalLM(config), _text(padded=False)


def _gptj() -> tuple[nn.Module, Any]:
    """GPT-J: untied head, rotary positions on part of each head."""
    from transformers import GPTJConfig, GPTJForCausalLM

    config = GPTJConfig(n_layer=2, n_embd=64, n_head=4, rotary_dim=8, vocab_size=VOCAB,
                        n_positions=64, use_cache=False, bos_token_id=0, eos_token_id=0)
    return GPTJForCausalLM(config), _text(padded=False)


# ------------------------------------------------------------------ decoders with positions


def _gpt_neo() -> tuple[nn.Module, Any]:
    """GPT-Neo: learned positions, global and local attention layers, tied head."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    config = GPTNeoConfig(num_layers=2, hidden_size=64, num_heads=4, intermediate_size=128,
                          attention_types=[[["global", "local"], 1]], window_size=8,
                          vocab_size=VOCAB, max_position_embeddings=64, use_cache=False,
                          bos_token_id=0, eos_token_id=0)
    return GPTNeoForCausalLM(config), _text(padded=False)


def _biogpt() -> tuple[nn.Module, Any]:
    """BioGPT: learned positions, embeddings scaled by sqrt(d), tied output projection."""
    from transformers import BioGptConfig, BioGptForCausalLM

    config = BioGptConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                          intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=64,
                          use_cache=False)
    return BioGptForCausalLM(config), _text(padded=False)


# ------------------------------------------------------------------------ state-space model


def _mamba() -> tuple[nn.Module, Any]:
    """Mamba: selective state-space blocks (no attention, no positions), tied head."""
    from transformers import MambaConfig, MambaForCausalLM

    config = MambaConfig(num_hidden_layers=2, hidden_size=64, state_size=8, expand=2,
                         conv_kernel=4, vocab_size=VOCAB, use_cache=False)
    return MambaForCausalLM(config), _text(padded=False)


# ------------------------------------------------------------------- long-context encoders


def _longformer() -> tuple[nn.Module, Any]:
    """Longformer: local windows, and global attention on ``<cls>`` (separate global q/k/v)
    read by the classifier."""
    from transformers import LongformerConfig, LongformerForSequenceClassification

    config = LongformerConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                              intermediate_size=128, vocab_size=VOCAB, num_labels=3,
                              attention_window=4, max_position_embeddings=66, pad_token_id=1)
    return LongformerForSequenceClassification(config), _text()


def _big_bird() -> tuple[nn.Module, Any]:
    """BigBird: block-sparse attention (blocks of 2, one random block), learned positions."""
    from transformers import BigBirdConfig, BigBirdForSequenceClassification

    config = BigBirdConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                           intermediate_size=128, vocab_size=VOCAB, num_labels=3,
                           max_position_embeddings=64, attention_type="original_full")
    return BigBirdForSequenceClassification(config), _text()


def _funnel() -> tuple[nn.Module, Any]:
    """Funnel: pooled blocks; relative-position and token-type attention terms masked at
    ``<cls>``, which the classifier reads."""
    from transformers import FunnelConfig, FunnelForSequenceClassification

    config = FunnelConfig(block_sizes=[1, 1], d_model=64, n_head=4, d_head=16, d_inner=128,
                          vocab_size=VOCAB, num_labels=3, num_decoder_layers=1)
    return FunnelForSequenceClassification(config), _text()


# ------------------------------------------------------------------------- vision families


def _pvt_v2() -> tuple[nn.Module, Any]:
    """PVT-v2: hierarchical stages, each opened by an overlapping patch-embedding conv named
    ``proj``; spatial-reduction attention."""
    from transformers import PvtV2Config, PvtV2ForImageClassification

    config = PvtV2Config(image_size=IMAGE, num_encoder_blocks=2, depths=[1, 1],
                         sr_ratios=[2, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3],
                         strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                         num_labels=10)
    return PvtV2ForImageClassification(config), _images()


def _segformer() -> tuple[nn.Module, Any]:
    """SegFormer (MiT encoder): hierarchical stages with a LayerNorm after each stage."""
    from transformers import SegformerConfig, SegformerForImageClassification

    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                             hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2],
                             num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=32, num_labels=10)
    return SegformerForImageClassification(config), _images()


def _deit() -> tuple[nn.Module, Any]:
    """DeiT with distillation: two heads (``cls_classifier``, ``distillation_classifier``)
    whose logits are averaged."""
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    config = DeiTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, image_size=IMAGE, patch_size=8, num_labels=10)
    return DeiTForImageClassificationWithTeacher(config), _images()


def _deit_loss(model: nn.Module, inputs: Any) -> torch.Tensor:
    """DeiT's fine-tuning loss: cross-entropy of the averaged logits (it takes no labels)."""
    logits = model(**inputs).logits
    return nn.functional.cross_entropy(logits, _class_labels(logits.shape[-1]))


class _MixerBlock(nn.Module):
    def __init__(self, tokens: int, channels: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(),
                                       nn.Linear(2 * tokens, tokens))
        self.norm2 = nn.LayerNorm(channels)
        self.channel_mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(),
                                         nn.Linear(2 * channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MlpMixer(nn.Module):
    """MLP-Mixer (Tolstikhin et al. 2021, arXiv:2105.01601), small: patches of 8x8, two blocks
    of token- and channel-mixing MLPs, a mean-pooled head; timm's init (xavier_uniform weights,
    MLP biases N(0, 1e-6), a zero head)."""

    def __init__(self, channels: int = 32, classes: int = 10) -> None:
        super().__init__()
        tokens = (IMAGE // 8) ** 2
        self.stem = nn.Conv2d(3, channels, 8, stride=8)
        self.blocks = nn.Sequential(*(_MixerBlock(tokens, channels) for _ in range(2)))
        self.norm = nn.LayerNorm(channels)
        self.head = nn.Linear(channels, classes)
        with torch.no_grad():
            for name, module in self.named_modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.normal_(module.bias, std=1e-6)
                    if name == "head":
                        module.weight.zero_()
                        module.bias.zero_()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(1))


def _mixer() -> tuple[nn.Module, Any]:
    return MlpMixer(), _images()


def _mixer_loss(model: nn.Module, inputs: Any) -> torch.Tensor:
    logits = model(**inputs)
    return nn.functional.cross_entropy(logits, _class_labels(logits.shape[-1]))


def _efficientnet() -> tuple[nn.Module, Any]:
    """EfficientNet: depthwise convs, squeeze-and-excitation, SiLU, BatchNorm everywhere."""
    from transformers import EfficientNetConfig, EfficientNetForImageClassification

    config = EfficientNetConfig(image_size=IMAGE, width_coefficient=0.25, depth_coefficient=0.2,
                                hidden_dim=320, num_labels=10)
    return EfficientNetForImageClassification(config), _images()


def _mobilevit() -> tuple[nn.Module, Any]:
    """MobileViT: inverted-residual convs with transformer blocks over unfolded patches."""
    from transformers import MobileViTConfig, MobileViTForImageClassification

    config = MobileViTConfig(image_size=64, patch_size=2, hidden_sizes=[32, 48, 64],
                             neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
                             num_attention_heads=2, num_labels=10)
    return MobileViTForImageClassification(config), _images(size=64)


_Make = Callable[[], tuple[nn.Module, Any]]


def _bn_at_identity(make: _Make) -> _Make:
    """transformers' EfficientNet and MobileViT draw their BatchNorm weights from N(0, 0.02)
    (``_init_weights``), which shrinks every normalized output 50-fold; the papers' models
    start them at 1 (He et al. 2016; Tan & Le 2019, arXiv:1905.11946). The healthy MobileViT
    starts them at 1, the breakages below keep transformers' draw."""

    def made() -> tuple[nn.Module, Any]:
        model, inputs = make()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.weight.fill_(1.0)
        return model, inputs

    return made


def _efficientnet_torchvision_init() -> tuple[nn.Module, Any]:
    """EfficientNet's convolutions initialized as torchvision's (kaiming_normal, fan_out), its
    BatchNorm at 1/0; the classifier keeps transformers' N(0, 0.02) (torchvision's
    U(-1/sqrt(C), 1/sqrt(C)) starts 10 classes at loss 6.1, 2.7x ln 10)."""
    model, inputs = _efficientnet()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
    return model, inputs


def _convnext_v2() -> tuple[nn.Module, Any]:
    """ConvNeXt-V2: global response normalization (GRN gamma and beta at 0) in each block."""
    from transformers import ConvNextV2Config, ConvNextV2ForImageClassification

    config = ConvNextV2Config(num_stages=2, hidden_sizes=[32, 64], depths=[2, 1],
                              num_labels=10, image_size=IMAGE)
    return ConvNextV2ForImageClassification(config), _images()


# ---------------------------------------------------------------------- audio, multimodal


def _audio_config(cls: type) -> Any:
    return cls(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
               intermediate_size=128, conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3),
               conv_stride=(5, 2, 2), num_conv_pos_embeddings=16,
               num_conv_pos_embedding_groups=4, mask_time_prob=0.0, num_labels=4,
               classifier_proj_size=32)


def _wav2vec2() -> tuple[nn.Module, Any]:
    """Wav2Vec2: a conv feature encoder on the raw waveform (GroupNorm in its first layer), a
    conv position embedding, a transformer, a mean-pooled classifier."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    return Wav2Vec2ForSequenceClassification(_audio_config(Wav2Vec2Config)), _waveform()


def _hubert() -> tuple[nn.Module, Any]:
    from transformers import HubertConfig, HubertForSequenceClassification

    return HubertForSequenceClassification(_audio_config(HubertConfig)), _waveform()


def _clip() -> tuple[nn.Module, Any]:
    """CLIP: a text and a vision transformer, projections, a learned logit scale; the
    contrastive loss over the batch."""
    from transformers import CLIPConfig, CLIPModel

    text = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
            "intermediate_size": 128, "vocab_size": VOCAB, "max_position_embeddings": 64}
    vision = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
              "intermediate_size": 128, "image_size": IMAGE, "patch_size": 8}
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    return CLIPModel(config), {**_text(padded=False), **_images()}


def _clip_loss(model: nn.Module, inputs: Any) -> torch.Tensor:
    return model(**inputs, return_loss=True).loss


# ----------------------------------------- hand-built programs run under Lightning (issue 24)


def _lightning_module() -> type:
    import lightning

    return lightning.LightningModule


def _training_step(model: nn.Module, batch: Any) -> Any:
    return model.training_step(batch, 0)


def _mlp(features: int, width: int, classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width),
                         nn.ReLU(), nn.Linear(width, classes))


def _classifier_module(classes: int) -> nn.Module:
    class MlpClassifier(_lightning_module()):
        """A 3-layer ReLU MLP trained with cross-entropy on ``(x, y)`` batches."""

        def __init__(self) -> None:
            super().__init__()
            self.net = _mlp(16, 64, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, _batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

    return MlpClassifier()


def _tabular(classes: int, rows: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return torch.randn(rows, 16, generator=generator), _class_labels(classes, rows)


def _mlp_kaiming(classes: int, seed: int) -> Callable[[], tuple[nn.Module, Any]]:
    """A small-C classifier initialized by the ``kaiming_relu`` preset, the README's pairing
    with ``on_fail: "raise"``; its logits start at unit scale, so the expected initial loss is
    about ln C + 1/2, 1.7x ln 2 for C = 2."""

    def make() -> tuple[nn.Module, Any]:
        from lightning_init import InitPolicy

        model = _classifier_module(classes)
        InitPolicy.from_preset("kaiming_relu").apply(model, seed=seed)
        return model, _tabular(classes)

    return make


def _mlp_zero_head() -> tuple[nn.Module, Any]:
    """The zero output layer docs/policy.md recommends (``weight: zeros`` under ``last: true``)
    on a 3-layer ReLU MLP: at init every hidden layer gets exactly zero gradient, and one step
    moves the head off zero."""
    model = _classifier_module(10)
    with torch.no_grad():
        model.net[-1].weight.zero_()
        model.net[-1].bias.zero_()
    return model, _tabular(10)


def _autoencoder() -> tuple[nn.Module, Any]:
    class AutoEncoder(_lightning_module()):
        """An autoencoder of 8x8 images fed (image, label) batches, as a labelled image set
        gives them; a summed binary cross-entropy of the reconstruction, the label unused."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
            self.decoder = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.decoder(self.encoder(x.flatten(1))))

        def training_step(self, batch: Any, _batch_idx: int) -> torch.Tensor:
            images, _labels = batch
            return nn.functional.binary_cross_entropy(self(images), images.flatten(1),
                                                      reduction="sum")

    generator = torch.Generator().manual_seed(6)
    images = torch.rand(64, 1, 8, 8, generator=generator)
    return AutoEncoder(), (images, _class_labels(10, 64))


_LIGHTNING = {"lightning": True, "loss": _training_step}

def _beit() -> tuple[nn.Module, Any]:
    """BEiT with a learned absolute position table (zeros at init) and LayerScale at 0.1."""
    from transformers import BeitConfig, BeitForImageClassification

    config = BeitConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, image_size=IMAGE, patch_size=8, num_labels=10,
                        use_absolute_position_embeddings=True, use_relative_position_bias=False,
                        use_mean_pooling=True)
    return BeitForImageClassification(config), _images()


def _timesformer() -> tuple[nn.Module, Any]:
    """TimeSformer: video patches, a space position table and a time table added to them."""
    from transformers import TimesformerConfig, TimesformerForVideoClassification

    config = TimesformerConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=128, image_size=IMAGE, patch_size=8,
                               num_frames=2, num_labels=10)
    generator = torch.Generator().manual_seed(2)
    video = torch.randn(BATCH, 2, 3, IMAGE, IMAGE, generator=generator)
    return TimesformerForVideoClassification(config), {"pixel_values": video}


def _vit_drowned_positions(model: nn.Module) -> None:
    """The patch projection at LeCun's 1/sqrt(fan_in) (unit-scale tokens), the position
    table at 1e-4: it carries 1e-8 of the sum."""
    projection = model.vit.embeddings.patch_embeddings.projection.weight
    projection.normal_(0.0, projection[0].numel() ** -0.5)
    model.vit.embeddings.position_embeddings.normal_(0.0, 1e-4)


WIDER_HEALTHY: list[ZooCase] = [
    ZooCase("beit-absolute-positions", _beit),
    ZooCase("timesformer", _timesformer),
    ZooCase("gemma", _gemma),
    ZooCase("gemma2", _gemma2),
    ZooCase("gemma3", _gemma3),
    ZooCase("olmo2", _olmo2),
    ZooCase("falcon", _falcon),
    ZooCase("bloom", _bloom),
    ZooCase("phi", _phi),
    ZooCase("gptj", _gptj),
    ZooCase("gpt-neo", _gpt_neo),
    ZooCase("biogpt", _biogpt),
    ZooCase("mamba", _mamba),
    ZooCase("longformer", _longformer),
    ZooCase("big-bird", _big_bird),
    ZooCase("funnel", _funnel),
    ZooCase("pvt-v2", _pvt_v2),
    ZooCase("segformer", _segformer),
    ZooCase("deit-distilled", _deit, extra={"loss": _deit_loss}),
    ZooCase("mlp-mixer", _mixer, extra={"loss": _mixer_loss}),
    ZooCase("efficientnet", _efficientnet_torchvision_init),
    ZooCase("mobilevit", _bn_at_identity(_mobilevit)),
    ZooCase("convnext-v2", _convnext_v2),
    ZooCase("wav2vec2", _wav2vec2),
    ZooCase("hubert", _hubert),
    ZooCase("clip", _clip, extra={"loss": _clip_loss}),
    ZooCase("mlp-zero-head", _mlp_zero_head, forward=_training_step, extra=_LIGHTNING),
    ZooCase("autoencoder-labelled-batches", _autoencoder, forward=_training_step,
            extra=_LIGHTNING),
    *(ZooCase(f"mlp-{classes}-class-kaiming-relu-seed-{seed}", _mlp_kaiming(classes, seed),
              forward=_training_step, extra=_LIGHTNING)
      for classes in (2, 3) for seed in range(8)),
]


def check(case: ZooCase, model: nn.Module, inputs: Any, **options: Any) -> Any:
    """The init check of a case the way its program runs it: ``check_init`` with the case's
    forward, or for a LightningModule (``extra["lightning"]``) ``InitCallback``'s check of its
    ``training_step`` on the batch. ``options``: ``check_init``'s keywords (``ignore=``...)."""
    from lightning_init import check_init

    if case.extra.get("lightning"):
        from lightning_init.check import CheckOptions, check_lightning_module

        return check_lightning_module(model, inputs, CheckOptions(**options))
    return check_init(model, inputs, forward=case.forward, **options)


def _zero_norms(model: nn.Module) -> None:
    """Every LayerNorm and RMSNorm weight 0 ("zeros" where "ones" was meant)."""
    for module in model.modules():
        kind = type(module).__name__.lower()
        if ("layernorm" in kind or "rmsnorm" in kind) \
                and isinstance(getattr(module, "weight", None), torch.Tensor):
            module.weight.zero_()


def _phi_few_tokens() -> tuple[nn.Module, Any]:
    """Phi on a batch drawn from 20 tokens: each token is followed by many others, so only the
    context tells the next one (a lookup from the current token cannot fit it)."""
    model, _ = _phi()
    generator = torch.Generator().manual_seed(1)
    return model, {"input_ids": torch.randint(5, 25, (BATCH, SEQ), generator=generator)}


def _longformer_permuted() -> tuple[nn.Module, Any]:
    """Longformer on 8 orderings of the same tokens behind ``<s>``, labelled by their order:
    only the positions tell the samples apart."""
    model, _ = _longformer()
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(5, VOCAB, (SEQ - 1,), generator=generator)
    rows = [torch.cat([torch.zeros(1, dtype=torch.long), tokens[torch.randperm(SEQ - 1,
                                                                           generator=generator)]])
            for _ in range(BATCH)]
    return model, {"input_ids": torch.stack(rows)}


# Each breakage was shown not to train: 300 AdamW steps (lr 1e-3) on its own batch with its own
# loss, against the healthy model's (scratch measurement, torch 2.13 CPU; loss at step 0 -> 300).
WIDER_BREAKAGES: list[ZooCase] = [
    ZooCase(  # a learned position table lost under unit-scale patches
        "vit-position-table-std-1e-4",
        _spoil(_vit, _vit_drowned_positions),
        group=("vit.embeddings.*",),
        advice=(("embedding", "position_embeddings"),),
    ),
    # 300 steps: 6.24 -> 0.96 (healthy 6.23 -> 0.054), on a batch of 20 tokens
    ZooCase(  # issue 24: blocks add ~1e-3 of the stream each; the head reads a unit norm output
        "phi-embed-tokens-std-100",
        _spoil(_phi_few_tokens, lambda m: m.model.embed_tokens.weight.normal_(0.0, 100.0)),
        group=("model.embed_tokens", "model.layers.0.*"),
        advice=(("embedding", "embed_tokens"),),
        not_advice=("scale the last layer's weights down",),
    ),
    # 300 steps: 1.10 -> 0.0046 (healthy 0.0024) with labels by order: 20x slower, 0.43 against
    # 0.020 at step 100
    ZooCase(  # issue 24: word embeddings swamp the positions (std 0.02) before the LayerNorm
        "longformer-word-embeddings-std-100",
        _spoil(_longformer_permuted,
               lambda m: m.longformer.embeddings.word_embeddings.weight.normal_(0.0, 100.0)),
        group=("longformer.embeddings.*",),
        advice=(("embedding", "word_embeddings"),),
    ),
    # 300 steps: 2.30 -> 1.91 (healthy 2.26 -> 0.039)
    ZooCase(  # transformers' own _init_weights: BatchNorm weights N(0, 0.02)
        "efficientnet-bn-weight-normal",
        _efficientnet,
        group=("efficientnet.*",),
        advice=(("weight 1", "weights 1", "ones", "to 1", "std", "scale"),),
    ),
    # 300 steps: 2.30 -> 0.67 (healthy 2.29 -> 0.020)
    ZooCase(  # transformers' own _init_weights: BatchNorm weights N(0, 0.02)
        "mobilevit-bn-weight-normal",
        _mobilevit,
        group=("mobilevit.*",),
        advice=(("weight 1", "weights 1", "ones", "to 1", "std", "scale"),),
    ),
    # 300 steps: 6.22 -> 0.48 (healthy 6.21 -> 0.025)
    ZooCase(
        "gemma-linear-normal",
        _spoil(_gemma, lambda m: _weights(m, (nn.Linear,), _normal(1.0), "model.layers.")),
        group=("model.layers.*", "lm_head"),
        advice=(("std", "init", "scale"),),
    ),
    # 300 steps: 6318 -> 782 (healthy 6.22 -> 0.025)
    ZooCase(
        "gpt-neo-wte-std-100",
        _spoil(_gpt_neo, lambda m: m.transformer.wte.weight.normal_(0.0, 100.0)),
        group=("transformer.wte", "lm_head", "transformer.h.0.*", "transformer.ln_f"),
        advice=(("embedding", "wte"),),
        not_advice=("scale the last layer's weights down",),
    ),
    # 300 steps: 6.22 -> 0.76 (healthy 6.63 -> 0.016)
    ZooCase(
        "mamba-norm-weights-zero",
        _spoil(_mamba, _zero_norms),
        group=("backbone.*", "lm_head"),
        advice=(("weight 1", "weights 1", "ones", "to 1"),),
        not_advice=("kaiming", "xavier"),
    ),
    # 300 steps: 2.30 -> 1.91 (healthy 2.28 -> 0.0075)
    ZooCase(
        "deit-norm-weights-zero",
        _spoil(_deit, _zero_norms),
        group=("deit.*", "cls_classifier", "distillation_classifier"),
        advice=(("weight 1", "weights 1", "ones", "to 1"),),
        not_advice=("kaiming", "xavier"),
        extra={"loss": _deit_loss},
    ),
    # 300 steps: 2.30 -> 1.92 (healthy 2.30 -> 0.016)
    ZooCase(
        "pvt-v2-norm-weights-zero",
        _spoil(_pvt_v2, _zero_norms),
        group=("pvt_v2.*", "classifier"),
        advice=(("weight 1", "weights 1", "ones", "to 1"),),
        not_advice=("kaiming", "xavier"),
    ),
    # 300 steps: 6.22 -> 4.71 (healthy 6.22 -> 0.026)
    ZooCase(
        "bloom-norm-weights-zero",
        _spoil(_bloom, _zero_norms),
        group=("transformer.*", "lm_head"),
        advice=(("weight 1", "weights 1", "ones", "to 1"),),
        not_advice=("kaiming", "xavier"),
    ),
    # 300 steps: 5943 -> 1137 (healthy 6.22 -> 0.042)
    ZooCase(  # BioGPT multiplies its embeddings by sqrt(d) = 8: the stream starts at std 800
        "biogpt-embed-tokens-std-100",
        _spoil(_biogpt, lambda m: m.biogpt.embed_tokens.weight.normal_(0.0, 100.0)),
        group=("biogpt.embed_tokens", "output_projection", "biogpt.layers.0.*",
               "biogpt.layer_norm"),
        advice=(("embedding", "embed_tokens"),),
        not_advice=("scale the last layer's weights down",),
    ),
    # 300 steps: 6.23 -> 0.55 (healthy 6.20 -> 0.040)
    ZooCase(
        "gemma2-linear-normal",
        _spoil(_gemma2, lambda m: _weights(m, (nn.Linear,), _normal(1.0), "model.layers.")),
        group=("model.layers.*", "lm_head"),
        advice=(("std", "init", "scale"),),
    ),
    # 300 steps: 6.23 -> 0.24 (healthy 6.24 -> 0.026)
    ZooCase(
        "falcon-linear-normal",
        _spoil(_falcon, lambda m: _weights(m, (nn.Linear,), _normal(1.0), "transformer.h.")),
        group=("transformer.h.*", "lm_head"),
        advice=(("std", "init", "scale"),),
    ),
    # 300 steps: 8.45 -> 1.11 (healthy 1.15 -> 0.00062)
    ZooCase(
        "funnel-linear-normal",
        _spoil(_funnel, lambda m: _weights(m, (nn.Linear,), _normal(1.0))),
        group=("funnel.*", "classifier.*"),
        advice=(("std", "init", "scale"),),
    ),
]


HEALTHY.extend(WIDER_HEALTHY)
BREAKAGES.extend(WIDER_BREAKAGES)

from zoo_text2 import TEXT2_BREAKAGES, TEXT2_HEALTHY  # noqa: E402  (issue 23, its second text block)

HEALTHY.extend(TEXT2_HEALTHY)
BREAKAGES.extend(TEXT2_BREAKAGES)

from zoo_vision2 import VISION2_BREAKAGES, VISION2_HEALTHY  # noqa: E402

HEALTHY.extend(VISION2_HEALTHY)
BREAKAGES.extend(VISION2_BREAKAGES)
