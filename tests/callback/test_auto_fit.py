"""``InitCallback(policy="auto")`` in a real fit, and ``lightning-init doctor``."""

from __future__ import annotations

import torch
import yaml
from _models import Net, make_loader, write_doctor_models
from _models import quiet_trainer as _trainer

from lightning_init import InitCallback, InitPolicy
from lightning_init.cli import main
from lightning_init.policy.auto import auto_rules


def test_auto_policy_is_the_one_real_init_and_its_yaml_is_written(tmp_path) -> None:
    model = Net(lr=0.0)  # lr 0: the weights after fit are the init
    trainer = _trainer(tmp_path, callbacks=[InitCallback(policy="auto")])
    trainer.fit(model)
    # the YAML written to the log dir reproduces the init without the sample batch
    expected = Net(lr=0.0)
    InitPolicy.from_yaml(tmp_path / "init_policy.yaml").apply(expected)
    for (name, got), (_, want) in zip(model.state_dict().items(),
                                      expected.state_dict().items(), strict=True):
        assert torch.equal(got, want), name
    text = (tmp_path / "init_policy.yaml").read_text()
    policy = yaml.safe_load(text)
    rules = policy["rules"]
    assert [rule["match"]["name"] for rule in rules] == [["net.2"], ["net.0"]]
    assert rules[1]["weight"] == {"init": "normal", "std": "sqrt(2) / sqrt(fan_in)"}
    assert rules[0]["weight"] == {"init": "normal",
                                  "std": "head_gain / (sqrt(fan_in) * head_input_rms)"}
    assert "# followed by relu: net.0" in text
    # a regression (mse_loss): the head's outputs start at a tenth of the target's rms, with
    # the head's input rms measured on a policy-initialized copy
    assert "# evidence: mse_loss against a target of rms" in text
    x, y = next(iter(make_loader()))
    target_rms = float(y.square().mean().sqrt())
    gain = policy["variables"]["head_gain"]
    assert 0.05 * target_rms < gain < 0.2 * target_rms
    with torch.no_grad():
        outputs = model(x)
    assert 0.6 * gain < float(outputs.square().mean().sqrt()) < 1.6 * gain
    assert 0.5 < policy["variables"]["head_input_rms"] < 2


class _ReadsTheTrainer(Net):
    """A training_step that reads ``self.trainer`` (as schedulers and curricula do)."""

    def training_step(self, batch, batch_idx):
        assert self.trainer.global_step >= 0
        return super().training_step(batch, batch_idx)


def test_auto_measures_through_a_training_step_that_reads_the_trainer(tmp_path) -> None:
    model = _ReadsTheTrainer(lr=0.0)
    trainer = _trainer(tmp_path, callbacks=[InitCallback(policy="auto")])
    trainer.fit(model)
    policy = yaml.safe_load((tmp_path / "init_policy.yaml").read_text())
    assert 0.3 < policy["variables"]["head_input_rms"] < 3


def _write_models(tmp_path, monkeypatch) -> None:
    write_doctor_models(tmp_path, monkeypatch, "doctor_models")


def test_doctor_prints_both_verdicts_and_writes_the_policy(tmp_path, monkeypatch, capsys):
    _write_models(tmp_path, monkeypatch)
    out = tmp_path / "policy.yaml"
    status = main(["doctor", "--model", "doctor_models:deep", "--input-shape", "64,32",
                   "--write", str(out)])
    printed = capsys.readouterr().out
    assert status == 0
    assert "before: 2 problem(s) (input_dependence, gradient)" in printed
    assert "after the suggested policy: OK, no problem found" in printed
    assert InitPolicy.from_yaml(out).explain(
        __import__("doctor_models").deep()).entries[0].initializer == (
        "normal(std=sqrt(2) / sqrt(fan_in) -> 0.25)")


def test_doctor_takes_a_batch_factory_and_names_bad_options(tmp_path, monkeypatch, capsys):
    _write_models(tmp_path, monkeypatch)
    assert main(["doctor", "--model", "doctor_models:deep", "--input", "doctor_models:batch"]) == 0
    assert "after the suggested policy: OK" in capsys.readouterr().out
    assert main(["doctor", "--model", "doctor_models:deep", "--input-shape", "8,x"]) == 2
    assert "--input-shape '8,x': expected positive integers" in capsys.readouterr().err
    assert main(["doctor", "--model", "doctor_models:deep", "--input", "doctor_models:bach"]) == 2
    assert "has no attribute 'bach'" in capsys.readouterr().err


# ------------------------------------------------------------------ copies of the model
class _CountCopies:
    """Counts deep copies of parameters and the tensors handed to an apply's snapshot."""

    def __init__(self, monkeypatch) -> None:
        from lightning_init.policy._snapshot import Snapshot

        self.deep_copies: list[int] = []
        self.snapshot: list[int] = []
        deepcopy, take = torch.nn.Parameter.__deepcopy__, Snapshot.take

        def counted_deepcopy(param, memo):
            self.deep_copies.append(id(param))
            return deepcopy(param, memo)

        def counted_take(snapshot, tensors, modules=()):
            tensors = list(tensors)
            self.snapshot += [id(t) for t in tensors if t is not None]
            return take(snapshot, tensors, modules)

        monkeypatch.setattr(torch.nn.Parameter, "__deepcopy__", counted_deepcopy)
        monkeypatch.setattr(Snapshot, "take", counted_take)


class _TinyLM(Net):
    """A LLaMA decoder as a LightningModule: a head, a residual stream and attention, so that
    auto measures three variables."""

    def build(self) -> None:
        from transformers import LlamaConfig, LlamaForCausalLM

        self.lm = LlamaForCausalLM(LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
            use_cache=False))

    def training_step(self, batch, batch_idx):
        return self.lm(input_ids=batch, labels=batch).loss

    def train_dataloader(self):
        tokens = torch.randint(64, (16, 12), generator=torch.Generator().manual_seed(3))
        return torch.utils.data.DataLoader(tokens, batch_size=8)


def test_callback_auto_measures_in_place_without_a_copy(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    model = _TinyLM(lr=0.0)
    counts = _CountCopies(monkeypatch)
    _trainer(tmp_path, callbacks=[InitCallback(policy="auto", check=False)]).fit(model)
    params = {id(p) for p in model.parameters()}
    assert counts.deep_copies == []
    assert not params & set(counts.snapshot)  # the apply over its own measurement: no snapshot
    text = (tmp_path / "init_policy.yaml").read_text()
    variables = yaml.safe_load(text)["variables"]
    assert {"head_input_rms", "stream_rms", "attention_logit_rms"} <= set(variables)
    # measured in place, the values are those measured on a copy: the YAML and the weights of
    # InitPolicy.auto on a model built alike are the same, bit for bit
    torch.manual_seed(0)
    fresh = _TinyLM(lr=0.0)
    sample = next(iter(fresh.train_dataloader()))
    rules = auto_rules(fresh, sample, forward=lambda m, b: m.training_step(b, 0))
    assert rules.yaml() == text
    InitPolicy.from_yaml(tmp_path / "init_policy.yaml").apply(fresh)
    for (name, got), (_, want) in zip(model.state_dict().items(), fresh.state_dict().items(),
                                      strict=True):
        assert torch.equal(got, want), name


def test_auto_policy_and_suggest_policy_copy_the_model_once(monkeypatch) -> None:
    from lightning_init import check_init

    torch.manual_seed(0)
    model = _TinyLM(lr=0.0).lm
    sample = torch.randint(64, (8, 12), generator=torch.Generator().manual_seed(3))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    counts = _CountCopies(monkeypatch)
    InitPolicy.auto(model, sample)  # three measured variables, one copy
    n_params = len(before)
    assert len(counts.deep_copies) == n_params
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name  # the model is left as it was
    report = check_init(model, sample)
    counts.deep_copies.clear()
    report.suggest_policy()
    assert len(counts.deep_copies) == n_params
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name


def test_callback_auto_with_only_missing_measures_on_a_copy(tmp_path, monkeypatch) -> None:
    """Under only_missing the loaded weights stay: the measuring passes must not touch them."""
    torch.manual_seed(0)
    model = Net(lr=0.0)
    loaded = {"net.0.weight": model.net[0].weight.detach().clone(),
              "net.0.bias": model.net[0].bias.detach().clone()}
    counts = _CountCopies(monkeypatch)
    callback = InitCallback(policy="auto", check=False, only_missing=loaded)
    _trainer(tmp_path, callbacks=[callback]).fit(model)
    assert torch.equal(model.net[0].weight, loaded["net.0.weight"])
    assert torch.equal(model.net[0].bias, loaded["net.0.bias"])
    assert len(counts.deep_copies) == len(list(model.parameters()))
