"""Run by tests/test_callback_ddp.py: ``python tests/_ddp_script.py OUT_DIR``.

``strategy="ddp"`` re-runs this script for rank 1, so every rank builds its own models, each
after ``torch.manual_seed(100 + rank)``. Each case writes ``OUT_DIR/<case>_rank<r>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from _models import RELU_POLICY, ConfiguredNet, Net, StandInPolicy

from lightning_init._fingerprint import weights_fingerprint
from lightning_init.callback import InitCallback


def _run(case: str, model: L.LightningModule, policy: object, out_dir: Path) -> None:
    callback = InitCallback(policy=policy, check=False, diagnostics=False)
    trainer = L.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_steps=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=out_dir,
        callbacks=[callback],
    )
    result: dict[str, object] = {}
    try:
        trainer.fit(model)
    except RuntimeError as error:
        result["error"] = str(error)
    result.update(
        rank=trainer.global_rank,
        fingerprint=weights_fingerprint(model),
        state=callback.state_dict(),
        steps=model.steps,
    )
    (out_dir / f"{case}_rank{trainer.global_rank}.json").write_text(json.dumps(result))


def main() -> None:
    out_dir = Path(sys.argv[1])
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.manual_seed(100 + rank)
    _run("init", Net(), RELU_POLICY, out_dir)  # the real engine, no seed of its own
    torch.manual_seed(200 + rank)
    _run("configure_model", ConfiguredNet(), RELU_POLICY, out_dir)
    torch.manual_seed(300 + rank)  # last: the error ends the run
    _run("rank_dependent", ConfiguredNet(), StandInPolicy(ignore_seed=True), out_dir)


if __name__ == "__main__":
    main()
