"""Training budgets: parsing, errors a user can act on, exhausted/fraction."""

from __future__ import annotations

import pytest

from clusterbench.api import ConfigError
from clusterbench.budget import Budget


def test_parse_single_limit():
    b = Budget.parse("epochs=100")
    assert b == Budget(epochs=100.0)
    assert b.to_dict() == {"epochs": 100.0}
    assert str(b) == "epochs=100"


def test_parse_several_limits_in_one_item():
    b = Budget.parse("steps=5,minutes=1")
    assert b.steps == 5 and isinstance(b.steps, int)
    assert b.minutes == 1.0
    assert b.epochs is None and b.images is None
    assert b.to_dict() == {"steps": 5, "minutes": 1.0}


def test_parse_list_form_and_spaces():
    b = Budget.parse(["epochs=2.5", " images=1e6 , minutes=30"])
    assert b == Budget(epochs=2.5, images=1_000_000, minutes=30.0)
    assert isinstance(b.images, int)


@pytest.mark.parametrize("empty", [None, "", []])
def test_empty_budget(empty):
    b = Budget.parse(empty)
    assert b.empty
    assert str(b) == "method default"
    assert b.to_dict() == {}
    assert not Budget.parse("steps=1").empty


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("epochs", "expected KEY=VALUE"),
        ("epoch=100", "expected KEY=VALUE"),
        ("=100", "expected KEY=VALUE"),
        ("hours=2", "epochs, steps, images, minutes"),
        ("epochs=abc", "'abc' is not a number"),
        ("epochs=", "is not a number"),
        ("steps=0", "must be positive"),
        ("minutes=-5", "must be positive"),
        ("epochs=nan", "must be positive"),
        ("steps=inf", "must be positive and finite"),
        ("minutes=inf", "must be positive and finite"),
        ("steps=0.5", "steps must be at least 1"),
        ("images=0.2", "images must be at least 1"),
        ("epochs=100;steps=5", ""),
    ],
)
def test_bad_syntax_is_a_config_error(text, fragment):
    with pytest.raises(ConfigError) as info:
        Budget.parse(text)
    msg = str(info.value)
    assert fragment in msg
    assert "\n" not in msg
    assert "bad budget" in msg  # names the offending part


def test_error_message_shows_an_example():
    with pytest.raises(ConfigError, match=r"e\.g\. --budget epochs=100"):
        Budget.parse("epoch=1")


def test_exhausted_at_first_limit():
    b = Budget(epochs=10, steps=100)
    assert not b.exhausted(epoch=0, step=0, images=0, seconds=0)
    assert not b.exhausted(epoch=9.9, step=99, images=10**9, seconds=10**6)  # images/time unlimited
    assert b.exhausted(epoch=10, step=3, images=0, seconds=0)
    assert b.exhausted(epoch=1, step=100, images=0, seconds=0)
    assert Budget(images=50).exhausted(epoch=0, step=0, images=50, seconds=0)
    assert not Budget(minutes=1).exhausted(epoch=0, step=0, images=0, seconds=59.9)
    assert Budget(minutes=1).exhausted(epoch=0, step=0, images=0, seconds=60)
    assert not Budget().exhausted(epoch=1e9, step=10**9, images=10**12, seconds=1e9)


def test_fraction_is_the_most_spent_limit_capped_at_one():
    b = Budget(epochs=10, steps=1000, minutes=2)
    assert b.fraction(epoch=0, step=0, images=0, seconds=0) == 0.0
    assert b.fraction(epoch=5, step=100, images=0, seconds=30) == pytest.approx(0.5)
    assert b.fraction(epoch=1, step=900, images=0, seconds=30) == pytest.approx(0.9)
    assert b.fraction(epoch=1, step=1, images=0, seconds=90) == pytest.approx(0.75)
    assert b.fraction(epoch=20, step=0, images=0, seconds=0) == 1.0
    assert Budget(images=200).fraction(epoch=0, step=0, images=50, seconds=0) == pytest.approx(0.25)
    assert Budget().fraction(epoch=5, step=5, images=5, seconds=5) == 0.0


def test_round_trip_through_dict():
    b = Budget.parse("steps=2000,minutes=30")
    assert Budget(**b.to_dict()) == b
    assert Budget.parse(str(b)) == b
