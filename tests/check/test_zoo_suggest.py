"""``report.suggest_policy()`` on every broken model of the zoo: offered, and its re-check passes.

Each breakage of ``tests/helpers/zoo.py`` is checked (it fails), the suggestion is asked for,
and the suggested policy's re-check (the same check on a copy initialized by it) must find
nothing. Cases the library gets wrong today are marked ``xfail(strict=True)`` with the cause: a
fix shows as a flip.
"""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from zoo import BREAKAGES, ZooCase, build, check

# Cases where no suggestion is offered or its re-check fails, by name, with the cause.
_NO_FIX: dict[str, str] = {
}


def _param(case: ZooCase) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=_NO_FIX[case.name])] \
        if case.name in _NO_FIX else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in BREAKAGES])
def test_a_suggestion_is_offered_and_its_recheck_passes(case: ZooCase) -> None:
    model, inputs = build(case)
    report = check(case, model, inputs)
    assert not report.ok, "the check found nothing: no suggestion to ask for"
    suggestion = report.suggest_policy()
    assert suggestion.offered, suggestion.verdicts()
    assert suggestion.policy is not None
    assert suggestion.recheck.ok, suggestion.verdicts()
