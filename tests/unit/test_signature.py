import numpy as np
import pytest

from rlrings.core.errors import InvalidArgumentError
from tests.helpers import frames, table_config

SIGNATURE = table_config().build_signature()


def test_a_good_chunk_reports_its_steps():
    assert SIGNATURE.check(frames(5)) == 5
    assert SIGNATURE.step_bytes == 8 * 8 * 3 + 4 + 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("reward"), r"missing \['reward'\]"),
        (lambda c: c.update(extra=np.zeros(5)), r"unknown \['extra'\]"),
        (
            lambda c: c.update(action=c["action"].astype(np.int64)),
            r"\['action'\]\.dtype: got int64, the table stores int32",
        ),
        (
            lambda c: c.update(obs=np.zeros((5, 8, 8), np.uint8)),
            r"\['obs'\]\.shape: got \[5, 8, 8\], the table wants \[T, 8, 8, 3\]",
        ),
        (lambda c: c.update(reward=np.zeros(4, np.float32)), r"\['reward'\]\.shape: 4 steps, but column 'obs' has 5"),
        (lambda c: c["reward"].__setitem__(2, np.inf), r"\['reward'\]: non-finite value inf at index \[2\]"),
    ],
)
def test_bad_chunks_name_the_column(change, message):
    chunk = {name: np.array(value) for name, value in frames(5).items()}
    change(chunk)
    with pytest.raises(InvalidArgumentError, match=message):
        SIGNATURE.check(chunk)


def test_empty_chunks_are_refused():
    with pytest.raises(InvalidArgumentError, match="empty chunk, no columns"):
        SIGNATURE.check({})
    with pytest.raises(InvalidArgumentError, match="empty chunk, 0 steps"):
        SIGNATURE.check(frames(0))
