"""CheckOptions: typed fields, one validation, the parser's did-you-mean, LightningCLI's view."""

from __future__ import annotations

import dataclasses

import pytest

from lightning_init import OptionError
from lightning_init.check import CheckOptionError, CheckOptions
from lightning_init.check.verdicts import DEFAULT_THRESHOLDS


def test_one_typed_field_per_threshold_with_its_default() -> None:
    fields = {field.name: field for field in dataclasses.fields(CheckOptions)}
    assert list(fields) == ["on_fail", "num_classes", *DEFAULT_THRESHOLDS, "ignore"]
    for name, default in DEFAULT_THRESHOLDS.items():
        assert fields[name].type == "float" and fields[name].default == default
    assert CheckOptions().thresholds == DEFAULT_THRESHOLDS


def test_built_directly_the_values_are_checked_too() -> None:
    with pytest.raises(CheckOptionError, match=r"'on_fail' must be one of raise, warn, "
                                               r"got 'rasie'\. Did you mean 'raise'\?"):
        CheckOptions(on_fail="rasie")  # type: ignore[arg-type]
    with pytest.raises(CheckOptionError, match=r"'max_dead_fraction' must be a positive number"):
        CheckOptions(max_dead_fraction=0.0)
    with pytest.raises(CheckOptionError, match=r"'num_classes' must be an integer >= 2, got 1"):
        CheckOptions(num_classes=1)
    options = CheckOptions(max_scale_drift=10)
    assert options.max_scale_drift == 10.0 and type(options.max_scale_drift) is float


def test_from_arg_reads_thresholds_at_the_top_or_nested_and_keeps_options_as_they_are() -> None:
    options = CheckOptions(on_fail="raise")
    assert CheckOptions.from_arg(options) is options
    nested = CheckOptions.from_arg({"thresholds": {"max_grad_drift": 50}, "max_loss_ratio": 2})
    assert (nested.max_grad_drift, nested.max_loss_ratio) == (50.0, 2.0)
    with pytest.raises(CheckOptionError, match=r"unknown threshold 'max_grad_drfit'\. Did you mean "
                                               r"'max_grad_drift'\? Valid thresholds: max_dead"):
        CheckOptions.from_arg({"thresholds": {"max_grad_drfit": 50}})
    with pytest.raises(CheckOptionError, match=r"'thresholds' must be a mapping, got 3"):
        CheckOptions.from_arg({"thresholds": 3})
    with pytest.raises(CheckOptionError, match=r"^check= takes True, False or a mapping of options "
                                               r"\(or CheckOptions\), got 'raise' of type str$"):
        CheckOptions.from_arg("raise")  # type: ignore[arg-type]


def test_the_error_is_an_option_error_shown_under_its_public_path() -> None:
    assert issubclass(CheckOptionError, OptionError) and issubclass(CheckOptionError, ValueError)
    assert f"{CheckOptionError.__module__}.{CheckOptionError.__qualname__}" == (
        "lightning_init.check.CheckOptionError"
    )


def test_lightning_cli_parser_validates_each_nested_key() -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--check", type=CheckOptions)
    config = parser.parse_args(['--check={"on_fail": "raise", "max_dead_fraction": 0.5}'])
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    options = instantiate(config).check
    assert options == CheckOptions(on_fail="raise", max_dead_fraction=0.5)
    with pytest.raises(jsonargparse.ArgumentError, match=r"check\.on_fail"):
        parser.parse_args(['--check={"on_fail": "rasie"}'])
    with pytest.raises(jsonargparse.ArgumentError, match=r"max_dead_fractoin"):
        parser.parse_args(["--check.max_dead_fractoin=0.5"])
