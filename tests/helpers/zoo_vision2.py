"""The zoo's vision, audio and multimodal families that no test held before (issue 23).

Built from ``transformers`` configs (tiny: 1-2 stages or layers, hidden 16-64, 32x32 images,
640-sample waveforms), each initialized by its own ``_init_weights`` under the zoo's seed, and
a few breakages of them. ``tests/helpers/zoo.py`` imports this module at its end and extends
``HEALTHY`` and ``BREAKAGES``; import the cases through ``zoo``, not this module first.

Not in it: Whisper's audio
classifier (its own init is flagged, borderline: the mean-pooled encoder output varies 0.98%
across samples, the sinusoidal positions swamping the conv front end at std 0.02; it trains
to 1.07 in 30 steps, auto to 0.005), EfficientFormer and VAN (no longer in transformers 5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from zoo import BATCH, IMAGE, VOCAB, ZooCase, _images, _spoil, _text, _waveform

_Make = Callable[[], tuple[nn.Module, Any]]


def _features(bins: int, frames: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(4)
    return torch.randn(BATCH, bins, frames, generator=generator)


def _fixed(shape: torch.Size, seed: int = 8) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# -------------------------------------------------------------------------------- vision


def _swinv2() -> tuple[nn.Module, Any]:
    """Swin-v2: cosine attention with a learned logit scale, a continuous position-bias MLP,
    post-norm residual branches (res-post-norm)."""
    from transformers import Swinv2Config, Swinv2ForImageClassification

    config = Swinv2Config(image_size=IMAGE, patch_size=4, embed_dim=32, depths=[1, 1],
                          num_heads=[2, 4], window_size=4, num_labels=10)
    return Swinv2ForImageClassification(config), _images()


def _cvt() -> tuple[nn.Module, Any]:
    """CvT: convolutional token embeddings, depthwise-conv + BatchNorm projections of q, k, v
    (transformers indexes its drop-path rates by stage, so stage 1 needs depth 2)."""
    from transformers import CvtConfig, CvtForImageClassification

    two = {"attention_drop_rate": [0.0, 0.0], "drop_rate": [0.0, 0.0],
           "drop_path_rate": [0.0, 0.0], "qkv_bias": [True, True], "kernel_qkv": [3, 3],
           "padding_kv": [1, 1], "stride_kv": [2, 2], "padding_q": [1, 1], "stride_q": [1, 1],
           "qkv_projection_method": ["dw_bn", "dw_bn"], "mlp_ratio": [2.0, 2.0]}
    config = CvtConfig(patch_sizes=[7, 3], patch_stride=[4, 2], patch_padding=[2, 1],
                       embed_dim=[16, 32], num_heads=[1, 2], depth=[1, 2],
                       cls_token=[False, True], num_labels=10, **two)
    return CvtForImageClassification(config), _images()


def _poolformer() -> tuple[nn.Module, Any]:
    """PoolFormer: average pooling as the token mixer, GroupNorm(1) norms, LayerScale 1e-5."""
    from transformers import PoolFormerConfig, PoolFormerForImageClassification

    config = PoolFormerConfig(depths=[1, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3],
                              strides=[4, 2], padding=[2, 1], num_encoder_blocks=2,
                              mlp_ratio=2.0, num_labels=10)
    return PoolFormerForImageClassification(config), _images()


def _focalnet() -> tuple[nn.Module, Any]:
    """FocalNet: focal modulation (depthwise convs, gates, a multiplicative modulator)."""
    from transformers import FocalNetConfig, FocalNetForImageClassification

    config = FocalNetConfig(image_size=IMAGE, patch_size=4, embed_dim=16, hidden_sizes=[16, 32],
                            depths=[1, 1], focal_levels=[2, 2], focal_windows=[3, 3],
                            drop_path_rate=0.0, mlp_ratio=2.0, num_labels=10)
    return FocalNetForImageClassification(config), _images()


def _bit() -> tuple[nn.Module, Any]:
    """BiT: pre-activation ResNet with weight-standardized convolutions and GroupNorm."""
    from transformers import BitConfig, BitForImageClassification

    config = BitConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], num_groups=8,
                       num_labels=10)
    return BitForImageClassification(config), _images()


def _levit() -> tuple[nn.Module, Any]:
    """LeViT: a convolutional stem, attention with learned biases that eval mode caches (with
    their graph: the check's passes run in eval mode), subsampling attention between stages,
    BatchNorm after every linear layer, two heads (class and distillation) averaged."""
    from transformers import LevitConfig, LevitForImageClassification

    config = LevitConfig(image_size=IMAGE, hidden_sizes=[32, 48], num_attention_heads=[1, 2],
                         depths=[1, 1], key_dim=[8, 8], mlp_ratio=[2, 2],
                         attention_ratio=[2, 2], drop_path_rate=0, num_labels=10,
                         down_ops=[["Subsample", 8, 32 // 8, 4, 2, 2]])
    return LevitForImageClassification(config), _images()


def _hiera() -> tuple[nn.Module, Any]:
    """Hiera: a hierarchical ViT with mask-unit attention and query pooling."""
    from transformers import HieraConfig, HieraForImageClassification

    config = HieraConfig(embed_dim=16, image_size=[IMAGE, IMAGE], patch_size=[3, 3],
                         patch_stride=[2, 2], patch_padding=[1, 1], mlp_ratio=2.0, depths=[1, 1],
                         num_heads=[1, 2], num_query_pool=1, query_stride=[2, 2],
                         masked_unit_size=[8, 8], masked_unit_attention=[True, False],
                         num_labels=10)
    return HieraForImageClassification(config), _images()


def _mobilenet_v1() -> tuple[nn.Module, Any]:
    """MobileNetV1: depthwise-separable convs, BatchNorm, ReLU6. Its classifier dropout is 0:
    transformers' default 0.999 (TensorFlow's keep probability, ported as a drop
    probability) drops all but 0.1% of the features, and neither init learns."""
    from transformers import MobileNetV1Config, MobileNetV1ForImageClassification

    config = MobileNetV1Config(image_size=IMAGE, depth_multiplier=0.25, num_labels=10,
                               classifier_dropout_prob=0.0)
    return MobileNetV1ForImageClassification(config), _images()


def _vit_config(cls: type, **extra: Any) -> Any:
    return cls(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=128, image_size=IMAGE, patch_size=8, **extra)


def _vit_msn() -> tuple[nn.Module, Any]:
    from transformers import ViTMSNConfig, ViTMSNForImageClassification

    return ViTMSNForImageClassification(_vit_config(ViTMSNConfig, num_labels=10)), _images()


def _vit_mae() -> tuple[nn.Module, Any]:
    """ViT-MAE pre-training: random masking (half the patches), a small decoder, the pixel
    reconstruction loss the model returns."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    config = _vit_config(ViTMAEConfig, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                         decoder_num_attention_heads=2, decoder_intermediate_size=64,
                         mask_ratio=0.5)
    return ViTMAEForPreTraining(config), _images()


def _yolos() -> tuple[nn.Module, Any]:
    """YOLOS backbone: detection tokens appended to the patches, a tanh pooler."""
    from transformers import YolosConfig, YolosModel

    config = YolosConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, image_size=[IMAGE, IMAGE], patch_size=8,
                         num_detection_tokens=4)
    return YolosModel(config), _images()


def _glpn() -> tuple[nn.Module, Any]:
    """GLPN depth estimation: a MiT encoder, a selective-fusion decoder, a sigmoid depth head."""
    from transformers import GLPNConfig, GLPNForDepthEstimation

    config = GLPNConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                        hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2],
                        num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=16)
    return GLPNForDepthEstimation(config), _images()


def _dpt() -> tuple[nn.Module, Any]:
    """DPT depth estimation: a ViT, reassemble and fusion stages of convs (no norm), a head of
    convs whose last, one channel, goes through a ReLU (a non-negative depth)."""
    from transformers import DPTConfig, DPTForDepthEstimation

    config = _vit_config(DPTConfig, backbone_out_indices=[0, 1, 2, 3], fusion_hidden_size=32,
                         neck_hidden_sizes=[16, 32, 64, 64], head_in_index=-1)
    config.num_hidden_layers = 4
    return DPTForDepthEstimation(config), _images()


def _depth_loss(model: nn.Module, inputs: Any) -> torch.Tensor:
    """A mean-squared error against a fixed depth map in [0, 1]."""
    depth = model(**inputs).predicted_depth
    return nn.functional.mse_loss(depth, _fixed(depth.shape))


# --------------------------------------------------------------------------- multimodal


def _siglip() -> tuple[nn.Module, Any]:
    """SigLIP: CLIP's two towers with a pairwise sigmoid loss (a learned scale and bias)."""
    from transformers import SiglipConfig, SiglipModel

    tower = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
             "intermediate_size": 128}
    text = {**tower, "vocab_size": VOCAB, "max_position_embeddings": 64, "pad_token_id": 0,
            "bos_token_id": 1, "eos_token_id": 2}
    vision = {**tower, "image_size": IMAGE, "patch_size": 8}
    config = SiglipConfig(text_config=text, vision_config=vision)
    return SiglipModel(config), {**_text(padded=False), **_images()}


def _siglip_loss(model: nn.Module, inputs: Any) -> torch.Tensor:
    return model(**inputs, return_loss=True).loss


def _vilt() -> tuple[nn.Module, Any]:
    """ViLT: text tokens and image patches in one transformer, a VQA head."""
    from transformers import ViltConfig, ViltForQuestionAnswering

    config = ViltConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, image_size=IMAGE, patch_size=8,
                        vocab_size=VOCAB, max_position_embeddings=64, num_labels=10,
                        max_image_length=-1)
    return ViltForQuestionAnswering(config), {**_text(padded=False), **_images()}


def _vilt_loss(model: nn.Module, inputs: Any) -> torch.Tensor:
    """VQA's multi-label binary cross-entropy against fixed answers (a fifth of them true)."""
    logits = model(**inputs).logits
    return nn.functional.binary_cross_entropy_with_logits(
        logits, (_fixed(logits.shape) < 0.2).float())


# -------------------------------------------------------------------------------- audio


def _audio_config(cls: type, **extra: Any) -> Any:
    return cls(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
               intermediate_size=128, conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3),
               conv_stride=(5, 2, 2), num_conv_pos_embeddings=16,
               num_conv_pos_embedding_groups=4, mask_time_prob=0.0, num_labels=4,
               classifier_proj_size=32, **extra)


def _data2vec_audio() -> tuple[nn.Module, Any]:
    """Data2Vec-Audio: LayerNorm in every feature-encoder conv, a stack of conv positions."""
    from transformers import Data2VecAudioConfig, Data2VecAudioForSequenceClassification

    return Data2VecAudioForSequenceClassification(_audio_config(Data2VecAudioConfig)), \
        _waveform()


def _sew() -> tuple[nn.Module, Any]:
    """SEW: the transformer runs on frames squeezed 2x by pooling, then upsampled."""
    from transformers import SEWConfig, SEWForSequenceClassification

    return SEWForSequenceClassification(_audio_config(SEWConfig, squeeze_factor=2)), _waveform()


def _sew_d() -> tuple[nn.Module, Any]:
    """SEW-D: SEW with DeBERTa's disentangled (content and relative-position) attention."""
    from transformers import SEWDConfig, SEWDForSequenceClassification

    return SEWDForSequenceClassification(_audio_config(SEWDConfig, squeeze_factor=2)), \
        _waveform()


def _unispeech() -> tuple[nn.Module, Any]:
    from transformers import UniSpeechConfig, UniSpeechForSequenceClassification

    return UniSpeechForSequenceClassification(_audio_config(UniSpeechConfig)), _waveform()


def _whisper() -> tuple[nn.Module, Any]:
    """Whisper: a two-conv front end on log-mel features, sinusoidal encoder positions, a
    decoder with a tied head, teacher-forced."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(num_mel_bins=16, encoder_layers=2, decoder_layers=2, d_model=64,
                           encoder_attention_heads=4, decoder_attention_heads=4,
                           encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=16,
                           max_target_positions=32, vocab_size=VOCAB, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                           use_cache=False)
    return WhisperForConditionalGeneration(config), {
        "input_features": _features(16, 32), "decoder_input_ids": _text(padded=False)["input_ids"]}


def _ast() -> tuple[nn.Module, Any]:
    """Audio Spectrogram Transformer: a ViT on a spectrogram's patches."""
    from transformers import ASTConfig, ASTForAudioClassification

    config = ASTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, patch_size=8, frequency_stride=8, time_stride=8,
                       max_length=32, num_mel_bins=32, num_labels=4)
    generator = torch.Generator().manual_seed(4)
    return ASTForAudioClassification(config), {
        "input_values": torch.randn(BATCH, 32, 32, generator=generator)}


def _speech2text() -> tuple[nn.Module, Any]:
    """Speech2Text: a conv subsampler (GLU), sinusoidal positions, an encoder-decoder."""
    from transformers import Speech2TextConfig, Speech2TextForConditionalGeneration

    config = Speech2TextConfig(vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2,
                               encoder_attention_heads=4, decoder_attention_heads=4,
                               encoder_ffn_dim=128, decoder_ffn_dim=128,
                               input_feat_per_channel=16, input_channels=1, conv_channels=32,
                               conv_kernel_sizes=[5, 5], num_conv_layers=2,
                               max_source_positions=64, max_target_positions=64, use_cache=False)
    return Speech2TextForConditionalGeneration(config), {
        "input_features": _features(32, 16), "decoder_input_ids": _text(padded=False)["input_ids"]}


VISION2_HEALTHY: list[ZooCase] = [
    ZooCase("swinv2", _swinv2),
    ZooCase("cvt", _cvt),
    ZooCase("poolformer", _poolformer),
    ZooCase("focalnet", _focalnet),
    ZooCase("bit", _bit),
    ZooCase("hiera", _hiera),
    ZooCase("levit", _levit),
    ZooCase("mobilenet-v1", _mobilenet_v1),
    ZooCase("vit-msn", _vit_msn),
    ZooCase("vit-mae", _vit_mae),
    ZooCase("yolos", _yolos),
    ZooCase("glpn", _glpn, extra={"loss": _depth_loss}),
    ZooCase("dpt", _dpt, extra={"loss": _depth_loss}),
    ZooCase("siglip", _siglip, extra={"loss": _siglip_loss}),
    ZooCase("vilt", _vilt, extra={"loss": _vilt_loss}),
    ZooCase("data2vec-audio", _data2vec_audio),
    ZooCase("sew", _sew),
    ZooCase("sew-d", _sew_d),
    ZooCase("unispeech", _unispeech),
    ZooCase("whisper", _whisper),
    ZooCase("audio-spectrogram-transformer", _ast),
    ZooCase("speech2text", _speech2text),
]


# ------------------------------------------------------------------------------- breakages


def _every_weight_normal(model: nn.Module) -> None:
    """Every Linear and Conv weight N(0, 1) (``normal_()`` with its default std)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            module.weight.normal_(0.0, 1.0)


def _norms_zero(model: nn.Module) -> None:
    """Every LayerNorm and GroupNorm weight 0 ("zeros" where "ones" was meant)."""
    for module in model.modules():
        kind = type(module).__name__.lower()
        if (isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "layernorm" in kind) \
                and isinstance(getattr(module, "weight", None), torch.Tensor):
            module.weight.zero_()


def _bn_weights_normal(model: nn.Module) -> None:
    """Every BatchNorm weight N(0, 0.02): transformers' own draw for EfficientNet and
    MobileViT (``_init_weights``), applied here to MobileNetV1, whose BatchNorms keep
    TensorFlow's eps 1e-3: each normalized output (std ~0.02) is below sqrt(eps), so the next
    BatchNorm does not renormalize it and the signal shrinks ~30x a block."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.weight.normal_(0.0, 0.02)


_SCALE = (("std", "init", "scale"),)
_ONES = (("weight 1", "weights 1", "ones", "to 1"),)


def _broken(name: str, make: _Make, spoil: Callable[[nn.Module], None],
            group: tuple[str, ...], **extra: Any) -> ZooCase:
    zero = spoil in (_norms_zero, _bn_weights_normal)
    return ZooCase(name, _spoil(make, spoil), group=group, advice=_ONES if zero else _SCALE,
                   not_advice=("kaiming", "xavier") if zero else (), extra=extra)


VISION2_BREAKAGES: list[ZooCase] = [
    _broken("poolformer-normal-everywhere", _poolformer, _every_weight_normal,
            ("poolformer.*", "classifier")),
    _broken("poolformer-norm-weights-zero", _poolformer, _norms_zero, ("poolformer.*",)),
    _broken("focalnet-normal-everywhere", _focalnet, _every_weight_normal,
            ("focalnet.*", "classifier")),
    _broken("cvt-norm-weights-zero", _cvt, _norms_zero, ("cvt.*",)),
    _broken("hiera-norm-weights-zero", _hiera, _norms_zero, ("hiera.*",)),
    _broken("levit-normal-everywhere", _levit, _every_weight_normal, ("levit.*", "classifier*")),
    _broken("swinv2-normal-everywhere", _swinv2, _every_weight_normal,
            ("swinv2.*", "classifier")),
    _broken("dpt-normal-everywhere", _dpt, _every_weight_normal, ("dpt.*", "neck.*", "head.*"),
            loss=_depth_loss),
    _broken("sew-norm-weights-zero", _sew, _norms_zero, ("sew.*",)),
    _broken("ast-norm-weights-zero", _ast, _norms_zero, ("audio_spectrogram_transformer.*",)),
    _broken("speech2text-normal-everywhere", _speech2text, _every_weight_normal,
            ("model.*", "lm_head")),
    # 100 AdamW steps: 1.95 (healthy 0.043); the features reach the head at std 1e-42
    _broken("mobilenet-v1-bn-weight-normal", _mobilenet_v1, _bn_weights_normal,
            ("mobilenet_v1.*",)),
    _broken("vilt-norm-weights-zero", _vilt, _norms_zero, ("vilt.*", "classifier.*"),
            loss=_vilt_loss),
]

__all__ = ["VISION2_BREAKAGES", "VISION2_HEALTHY"]
