"""Fine-tuning: keep a pretrained backbone untouched, initialize only the new head.

A real project loads its backbone from a checkpoint; this example makes that checkpoint
itself (a backbone trained briefly on the teacher task, saved to a file), so nothing is
downloaded. The policy's ``skip: ["net.backbone"]`` guarantees that no rule touches the loaded
weights, whatever the rules match, and ``policy.explain`` shows it before anything runs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import lightning as L
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import (
    Classifier,
    common_parser,
    loader,
    print_final_loss,
    teacher_classification,
    trainer_for,
)

from lightning_init import InitCallback, InitPolicy

POLICY = {
    "name": "new-head",
    "seed": 0,
    "rules": [
        {
            "match": {"type": "Linear"},
            "weight": {"init": "trunc_normal", "std": 0.02},
            "bias": "zeros",
        },
    ],
    "skip": ["net.backbone"],  # the module and everything under it
}


def backbone() -> nn.Sequential:
    return nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())


class FineTuner(Classifier):
    def __init__(self, backbone_path: Path) -> None:
        net = nn.Sequential()
        net.add_module("backbone", backbone())
        net.add_module("head", nn.Linear(128, 10))
        super().__init__(net, lr=0.02)
        net.backbone.load_state_dict(torch.load(backbone_path, weights_only=True))


def make_pretrained_backbone(path: Path) -> None:
    """Stands in for a download: a backbone trained for a few steps, saved as a state dict."""
    pretrain = Classifier(nn.Sequential(backbone(), nn.Linear(128, 10)), lr=0.05)
    L.Trainer(
        max_steps=30,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    ).fit(pretrain, loader(teacher_classification(seed=3)))
    torch.save(pretrain.net[0].state_dict(), path)


def main(argv: list[str] | None = None) -> None:
    args = common_parser(__doc__.splitlines()[0], max_steps=100).parse_args(argv)
    L.seed_everything(0, verbose=False)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "backbone.pt"
        make_pretrained_backbone(path)
        model = FineTuner(path)
        pretrained = {k: v.clone() for k, v in model.net.backbone.state_dict().items()}
        policy = InitPolicy.from_dict(POLICY)
        print(policy.explain(model))  # dry run: net.backbone.* listed as left alone

        init = InitCallback(policy=policy)
        trainer = trainer_for("finetune", args, [init])
        model.net.backbone.requires_grad_(False)  # frozen: only the head trains
        trainer.fit(model, loader(teacher_classification()))
    unchanged = all(
        torch.equal(pretrained[k], v) for k, v in model.net.backbone.state_dict().items()
    )
    print(f"backbone identical to the loaded checkpoint after init and training: {unchanged}")
    print_final_loss(trainer)
    if not unchanged:
        raise SystemExit("the backbone was modified")


if __name__ == "__main__":
    main()
