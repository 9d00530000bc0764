"""memlock._units: sizes and counts as people write them, exact and bounded."""

from __future__ import annotations

import pytest

from memlock._units import SIZE_MAX, SizeTooLargeError, parse_size


def test_sizes_are_exact_and_bounded() -> None:
    assert parse_size("9007199254740993") == 2**53 + 1  # no float on the way
    assert parse_size("1.5G") == 3 * 2**29 and parse_size("0.5K") == 512
    assert parse_size(str(SIZE_MAX)) == SIZE_MAX
    for text in ("9" * 400, str(SIZE_MAX + 1), "8388608T"):
        with pytest.raises(SizeTooLargeError, match="too large"):
            parse_size(text)
    for text in ("nan", "inf", "-1", "1e300", "", "1.", "٣K"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(text)
