"""`KeyAccount`, the one account of a checkpoint load that hm_extract, hm_torch and hm_paddle
share: what makes a load fail, and what its message names."""

from __future__ import annotations

import pytest

from hm_shared.errors import HmDataError
from hm_shared.key_account import KeyAccount

HEAD = "task head: intentionally random"


def test_keys_left_out_by_design_do_not_fail_and_are_grouped_by_reason() -> None:
    account = KeyAccount("u.pt", "uniter", loaded=["a", "b"])
    account.allowed += [("classifier.weight", HEAD), ("cls.bias", "pre-training head")]
    account.allowed.append(("classifier.bias", HEAD))
    assert account.ok
    account.raise_for_errors("never raised")
    assert account.allowed_keys(HEAD) == ["classifier.weight", "classifier.bias"]
    assert account.describe() == (
        "2 tensors loaded (uniter format); "
        f"not loaded by design ({HEAD}): classifier.weight, classifier.bias; "
        "not loaded by design (pre-training head): cls.bias"
    )


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        ("missing", "missing (the model expects, the file lacks): k0, k1"),
        ("unexpected", "unexpected (in the file, nowhere to go): k0, k1"),
        ("mismatched", "mismatched: k0, k1"),
    ],
)
def test_any_unaccounted_key_fails_naming_the_source_and_the_keys(kind: str, named: str) -> None:
    account = KeyAccount("/w/params", "ernie-vil")
    getattr(account, kind).extend(["k0", "k1"])
    assert not account.ok
    with pytest.raises(HmDataError) as error:
        account.raise_for_errors("Expected the released params/ folder")
    message = str(error.value)
    assert "/w/params" in message and named in message
    assert message.rstrip().endswith("Expected the released params/ folder")


def test_long_lists_are_cut_with_a_count() -> None:
    account = KeyAccount("x.pkl", missing=[f"key{i}" for i in range(30)])
    text = account.describe(limit=3)
    assert "key0, key1, key2 … and 27 more" in text and "key3" not in text
    assert text.startswith("0 tensors loaded;")
