import pytest

from zerosearch.reward import (
    answer_metrics,
    cover_exact_match,
    exact_match,
    extract_answer,
    f1_reward,
    f1_score,
    is_valid_format,
    normalize_answer,
)


def test_normalize_answer():
    assert normalize_answer("  The  Eiffel-Tower! ") == "eiffeltower"
    assert normalize_answer("An apple, a pear and THE plum.") == "apple pear and plum"
    assert normalize_answer("") == ""


def test_extract_answer_takes_last_complete_tag():
    assert extract_answer("<answer> Paris </answer> then <answer>Lyon</answer>") == "Lyon"
    assert extract_answer("<think>x</think><answer>\nRome\n</answer>") == "Rome"
    assert extract_answer("<answer>unfinished") is None
    assert extract_answer("no tags at all") is None


def test_exact_and_cover_match():
    assert exact_match("the Paris", ["paris"]) == 1.0
    assert exact_match("Paris, France", ["Paris"]) == 0.0
    assert cover_exact_match("Paris, France", ["Paris"]) == 1.0
    # token-aligned: "par" is not covered by "paris"
    assert cover_exact_match("Paris", ["par"]) == 0.0
    assert exact_match(None, ["x"]) == cover_exact_match(None, ["x"]) == 0.0


def test_f1_hand_computed():
    # pred tokens: [new, york, city]; gold: [new, york] -> common 2, P = 2/3, R = 1, F1 = 2*(2/3)/(5/3) = 0.8
    assert f1_score("New York City", ["New York"]) == pytest.approx(0.8)
    # max over golds: second gold matches exactly
    assert f1_score("New York City", ["Boston", "new york city"]) == 1.0
    # pred [a b b] vs gold [b c] (no articles here): common = min(2,1)=1, P=1/3, R=1/2, F1 = 2*(1/6)/(5/6) = 0.4
    assert f1_score("x y y", ["y z"]) == pytest.approx(0.4)
    assert f1_score("yes it is", ["no"]) == 0.0
    assert f1_score("no", ["no"]) == 1.0
    assert f1_score("", ["paris"]) == 0.0


def test_f1_reward_and_format_term():
    good = "<think>t</think><search>q</search>\n\n<information>Doc 1: d</information>\n\n<think>u</think><answer>Paris</answer>"
    bad = "<answer>Paris</answer> trailing text"
    assert is_valid_format(good)
    assert not is_valid_format(bad)
    assert not is_valid_format("<think><search>nested</search></think><answer>a</answer>")
    assert not is_valid_format("<think>no answer</think>")
    assert f1_reward(good, ["Paris"]) == 1.0
    assert f1_reward(bad, ["Paris"]) == 1.0  # format term off by default
    lam = 0.2
    assert f1_reward(good, ["Paris"], format_weight=lam) == 1.0
    assert f1_reward(bad, ["Paris"], format_weight=lam) == pytest.approx(0.8)
    assert f1_reward(good.replace("Paris", "Rome"), ["Paris"], format_weight=lam) == pytest.approx(0.2)
    assert f1_reward("nothing", ["Paris"], format_weight=lam) == 0.0


def test_answer_metrics():
    assert answer_metrics("Paris France", ["Paris"]) == {"em": 0.0, "cover_em": 1.0, "f1": pytest.approx(2 / 3)}
