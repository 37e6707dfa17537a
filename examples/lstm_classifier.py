"""An LSTM sequence classifier initialized by the ``lstm`` preset.

The preset (see ``lightning_init/policy/presets/lstm.yaml``): Xavier-uniform input weights, an
orthogonal matrix per gate for the hidden-to-hidden weights (Saxe et al. 2014), zero biases
except the forget gate's, set to 1 (Gers, Schmidhuber, Cummins 2000; Jozefowicz, Zaremba,
Sutskever 2015), so that the cell remembers by default at the start of training.

The task: sequences of 24 tokens from a vocabulary of 8; the label is whether token 1 occurs
more often than token 2, which needs memory across the whole sequence.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import Classifier, common_parser, loader, print_final_loss, trainer_for

from lightning_init import InitCallback


def counting_sequences(num_samples: int = 2048, length: int = 24, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(8, (num_samples, length), generator=generator)
    labels = ((tokens == 1).sum(dim=1) > (tokens == 2).sum(dim=1)).long()
    return TensorDataset(tokens, labels)


class LSTMNet(nn.Module):
    def __init__(self, vocab_size: int = 8, hidden_size: int = 64, num_classes: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, 32)
        self.lstm = nn.LSTM(32, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(self.embedding(tokens))
        return self.head(outputs[:, -1])


def main(argv: list[str] | None = None) -> None:
    args = common_parser(__doc__.splitlines()[0], max_steps=300).parse_args(argv)
    L.seed_everything(0, verbose=False)
    model = Classifier(LSTMNet(), lr=0.05)
    trainer = trainer_for("lstm", args, [InitCallback(policy="lstm")])
    trainer.fit(model, loader(counting_sequences()))
    print_final_loss(trainer)


if __name__ == "__main__":
    main()
