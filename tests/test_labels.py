"""File-name parser and label encoding."""

import pytest

from components.base import labels


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("25_1_2_20170116174525125.jpg.chip.jpg", (25, 1, 2)),
        ("1_0_0_20161219140623097.jpg.chip.jpg", (1, 0, 0)),
        ("116_1_4_20170120134639935.jpg.chip.jpg", (116, 1, 4)),
    ],
)
def test_parses_good_names(name, expected):
    parsed = labels.parse_filename(name)
    assert (parsed.age, parsed.gender, parsed.race) == expected


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("39_1_20170116174525125.jpg.chip.jpg", "name_mismatch"),  # missing field
        ("53__0_20170116184028385.jpg.chip.jpg", "name_mismatch"),  # empty field
        ("61_1_20170109150557335jpg.chip.jpg", "name_mismatch"),  # missing dot, and a field
        ("61_1_3_20170109150557335jpg.chip.jpg", "name_mismatch"),  # missing dot before jpg
        ("61_1_3_20170109150557335.jpg .chip.jpg", "name_mismatch"),  # stray space
        ("25_1_2_20170116174525125.jpg", "name_mismatch"),  # no .chip.jpg
        ("25_1_2_2017011617452512.jpg.chip.jpg", "name_mismatch"),  # 16-digit datetime
        ("117_1_2_20170116174525125.jpg.chip.jpg", "age_out_of_range"),
        ("25_2_2_20170116174525125.jpg.chip.jpg", "gender_out_of_range"),
        ("25_1_5_20170116174525125.jpg.chip.jpg", "race_out_of_range"),
    ],
)
def test_rejects_malformed_names_with_reason(name, reason):
    with pytest.raises(labels.FilenameError) as info:
        labels.parse_filename(name)
    assert info.value.reason == reason
    assert name in info.value.message


def test_custom_pattern_and_validation():
    pattern = labels.compile_pattern(r"^(?P<race>\d)-(?P<gender>\d)-(?P<age>\d+)\.png$")
    parsed = labels.parse_filename("3-0-42.png", pattern)
    assert (parsed.age, parsed.gender, parsed.race) == (42, 0, 3)
    with pytest.raises(ValueError, match="lacks named group"):
        labels.compile_pattern(r"^(?P<age>\d+)_(?P<gender>\d)\.jpg$")
    with pytest.raises(ValueError, match="not a valid regex"):
        labels.compile_pattern(r"^(?P<age>\d+")


def test_label_names_and_vector():
    assert labels.LABEL_NAMES == (
        "female", "race_white", "race_black", "race_asian", "race_indian", "race_other",
        "age_13_plus", "age_20_plus", "age_40_plus", "age_60_plus",
    )
    assert labels.label_vector(45, 1, 2) == [1, 0, 0, 1, 0, 0, 1, 1, 1, 0]
    assert labels.label_vector(12, 0, 4) == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert labels.label_vector(60, 0, 0) == [0, 1, 0, 0, 0, 0, 1, 1, 1, 1]
    assert labels.label_vector(13, 0, 1)[6] == 1 and labels.label_vector(19, 0, 1)[7] == 0


def test_age_groups():
    assert [labels.age_group(a) for a in (0, 12, 13, 19, 20, 39, 40, 59, 60, 116)] == [
        "0-12", "0-12", "13-19", "13-19", "20-39", "20-39", "40-59", "40-59", "60+", "60+",
    ]


def test_label_def_rejects_unknown_field():
    with pytest.raises(ValueError, match="field"):
        labels.LabelDef("x", "height", "ge", 3)
