"""Property-based checks (hypothesis) of the two parsers of outside text: spec strings and
stored results-store rows. Runs are kept short (`max_examples` modest, no deadline)."""

import itertools
import json
import sqlite3
import tempfile
from pathlib import Path

import pytest
from axsa.rtl.multipliers import FAMILIES, Format, SpecError, parse_spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from axsa.store import Store, key_hash

SHORT = settings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])

#: the characters specs are made of, so random text often gets deep into the parser
SPEC_ALPHABET = "abdegikmnrstuvhjloc0123456789()=,@/x _-+.|"
FORMATS = st.builds(Format, st.booleans(), st.integers(2, 8), st.integers(2, 8))


@st.composite
def specs(draw) -> str:
    """Spec strings near the valid ones: a known family, parameters drawn around their
    bounds (sometimes out of range, sometimes unknown), optional spaces."""
    family = draw(st.sampled_from(sorted(FAMILIES)))
    fmt = draw(FORMATS)
    items = []
    for p in FAMILIES[family].params:
        if p.default is not None and draw(st.booleans()):
            continue
        lo, hi = p.bounds(fmt)
        value = st.integers(lo - 1, hi + 1)
        if p.is_list:
            items.append(f"{p.name}=" + "/".join(map(str, draw(st.lists(value, min_size=1,
                                                                        max_size=4)))))
        else:
            items.append(f"{p.name}={draw(value)}")
    if draw(st.integers(0, 9)) == 0:
        items.append(f"{draw(st.sampled_from(['zz', 'k', 'q']))}={draw(st.integers(-3, 99))}")
    items = draw(st.permutations(items))
    space = draw(st.sampled_from(["", " "]))
    body = f"({(',' + space).join(items)})" if items or draw(st.booleans()) else ""
    return f"{space}{family}{space}{body}{space}@{space}{fmt}{space}"


def _parse_or_none(text):
    try:
        return parse_spec(text)
    except SpecError as exc:
        assert str(exc)  # a message, always
        return None


@SHORT
@given(st.text(max_size=40) | st.text(SPEC_ALPHABET, max_size=40))
def test_arbitrary_text_raises_nothing_but_spec_error(text):
    m = _parse_or_none(text)
    if m is not None:
        assert parse_spec(m.spec) == m


@SHORT
@given(specs())
def test_parsed_specs_round_trip_through_their_canonical_text(text):
    m = _parse_or_none(text)
    if m is None:
        return
    canonical = m.spec
    again = parse_spec(canonical)
    assert again == m and again.spec == canonical
    assert again.fmt == m.fmt and again.values == m.values
    assert canonical == canonical.strip() and " " not in canonical


@SHORT
@given(st.sampled_from(sorted(FAMILIES)), FORMATS)
def test_family_defaults_are_canonical(family, fmt):
    if any(p.default is None for p in FAMILIES[family].params):
        with pytest.raises(SpecError, match="needs parameter"):
            parse_spec(f"{family}@{fmt}")
        return
    m = _parse_or_none(f"{family}@{fmt}")
    if m is not None:  # some families refuse some formats (message checked above)
        assert m.spec == f"{family}@{fmt}"


# -- the results store -----------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
RECORDS = st.dictionaries(st.text(max_size=8), JSON, max_size=5)
_EXAMPLE = itertools.count()


@pytest.fixture(scope="module")
def store_path():
    with tempfile.TemporaryDirectory(prefix="axsa-prop-") as tmp:
        yield Path(tmp) / "r.sqlite"


@SHORT
@given(key=RECORDS, result=RECORDS, other=RECORDS, kind=st.text(min_size=1, max_size=6))
def test_put_get_round_trips_any_json_record(store_path, key, result, other, kind):
    store = Store(store_path)
    kind = f"{kind}#{next(_EXAMPLE)}"  # examples share one file: one kind each
    assert store.get(kind, key, versions=False) is None
    assert store.put(kind, key, result, versions=False)
    assert store.get(kind, key, versions=False) == result
    # a key is recorded once: a second put keeps the first result
    assert not store.put(kind, key, other, versions=False)
    assert store.get(kind, key, versions=False) == result
    with Store(store_path) as fresh:  # what another process sees
        assert fresh.get(kind, key, versions=False) == result


def _is_damaged(text: str) -> bool:
    try:
        return not isinstance(json.loads(text), dict)
    except ValueError:
        return True


@SHORT
@given(key=RECORDS, result=RECORDS,
       bad=st.text(max_size=30).filter(_is_damaged) | JSON.map(json.dumps).filter(_is_damaged))
def test_a_corrupt_row_is_a_miss_and_the_next_put_replaces_it(store_path, key, result, bad):
    store = Store(store_path)
    store.put("prop", key, {"first": 1}, versions=False)
    con = sqlite3.connect(store_path)
    con.execute("UPDATE results SET result_json = ? WHERE key_hash = ?",
                (bad, key_hash("prop", key)))
    con.commit()
    con.close()
    assert store.get("prop", key, versions=False) is None
    assert store.put("prop", key, result, versions=False)
    assert store.get("prop", key, versions=False) == result
