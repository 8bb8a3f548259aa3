"""ALMA uid parsing: round trips, and nothing unsafe ever comes out."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sails.errors import UserInputError
from sails.ids import is_uid, mous_uri, parse_uid, to_fs, to_uri

hexpart = st.text(alphabet="0123456789abcdef", min_size=1, max_size=8)
archive = st.integers(min_value=0, max_value=999).map(lambda n: f"A{n:03d}")


def test_known_forms():
    u = parse_uid("uid://A001/X1465/X15b")
    assert u.fs == "uid___A001_X1465_X15b"
    assert parse_uid("uid___A001_X1465_X15b").uri == "uid://A001/X1465/X15b"
    assert mous_uri("uid___A001_X1295_X35") == "uid://A001/X1295/X35"
    assert to_fs("uid___A002_Xc3412f_X2d3c.ms") == "uid___A002_Xc3412f_X2d3c"


@pytest.mark.parametrize("bad", [
    "", "uid://A001/X1465", "uid://A001/X1465/X15b/extra", "uid://A001/Y1465/X15b",
    "uid___A001_X1465_X15g", "../uid___A001_X1_X2", "uid://A001/X1/X2; rm -rf ~",
    "uid___A001_X1\n_X2", "uid___A001_X1_X2\x00", "uid:/A001/X1/X2", "A001/X1/X2", "uid://A01/X1/X2",
])
def test_rejects_malformed(bad):
    with pytest.raises(UserInputError) as exc:
        parse_uid(bad, "MOUS uid")
    assert "malformed MOUS uid" in str(exc.value)
    assert not is_uid(bad)


@given(archive, hexpart, hexpart)
def test_round_trip(a, x1, x2):
    uri = f"uid://{a}/X{x1}/X{x2}"
    fs = to_fs(uri)
    assert to_uri(fs) == uri
    assert to_fs(to_uri(fs)) == fs


@given(st.text(max_size=40))
def test_never_emits_unsafe_text(text):
    try:
        u = parse_uid(text)
    except UserInputError:
        return
    for out in (u.fs, u.uri.removeprefix("uid://")):
        assert not set(out) & set(" ;|&$`'\"\\\n\r\t*?<>(){}!#~")
    assert "/" not in u.fs and ".." not in u.fs
