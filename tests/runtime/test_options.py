"""The one options parser: the check's and the diagnostics' options read and refused alike."""

from __future__ import annotations

import pickle

import pytest

from lightning_init import InitCallback, OptionError
from lightning_init._yaml import load_yaml
from lightning_init.check import CheckOptionError, CheckOptions
from lightning_init.diagnostics import DiagnosticsOptionError, DiagnosticsOptions


@pytest.mark.parametrize(
    ("options", "error"),
    [(CheckOptions, CheckOptionError), (DiagnosticsOptions, DiagnosticsOptionError)],
)
def test_an_argument_of_another_type_is_the_engines_error_and_a_type_error(options, error) -> None:
    with pytest.raises(error) as raised:
        options.from_arg([1])
    assert isinstance(raised.value, TypeError) and isinstance(raised.value, OptionError)
    argument = "check" if options is CheckOptions else "diagnostics"
    assert str(raised.value) == (
        f"{argument}= takes True, False or a mapping of options (or {options.__name__}), "
        "got [1] of type list"
    )
    copied = pickle.loads(pickle.dumps(raised.value))  # what a spawned rank sends back
    assert type(copied) is error and copied.args == raised.value.args


def test_unknown_keys_and_values_are_worded_alike_with_their_yaml_line() -> None:
    with pytest.raises(CheckOptionError, match=r"^line 2: unknown check option 'on_fial'\. Did "
                                               r"you mean 'on_fail'\? Valid options: ignore, "):
        CheckOptions.from_arg(load_yaml("max_dead_fraction: 0.5\non_fial: raise\n"))
    with pytest.raises(DiagnosticsOptionError, match=r"^line 2: unknown diagnostics option "
                                                     r"'histogram'\. Did you mean 'histograms'\?"):
        DiagnosticsOptions.from_arg(load_yaml("every_n_steps: 5\nhistogram: true\n"))
    with pytest.raises(CheckOptionError, match=r"^line 1: check option 'on_fail' must be one of "
                                               r"raise, warn, got 'rasie'\. Did you mean "
                                               r"'raise'\?$"):
        CheckOptions.from_arg(load_yaml("on_fail: rasie\n"))
    with pytest.raises(DiagnosticsOptionError, match=r"^diagnostics option 'on_nonfinite' must "
                                                     r"be 'warn' or 'raise', got 'rasie'\. Did"):
        DiagnosticsOptions.from_arg({"on_nonfinite": "rasie"})


def test_the_callback_takes_none_as_off_like_the_engines() -> None:
    callback = InitCallback(check=None, diagnostics=None)
    assert callback._check_options is None and callback._diagnostics is None
    assert CheckOptions.from_arg(None) is None and DiagnosticsOptions.from_arg(None) is None
