from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from deft_aoi.errors import InputError
from deft_aoi.workspace.changenet_csv import (
    CHANGENET_COLUMNS,
    ChangeNetRow,
    check_paths_inside,
    image_paths,
    normalise_labels,
    read_changenet_csv,
    rebase_paths,
    write_changenet_csv,
)

HEADER = ",".join(CHANGENET_COLUMNS)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_reads_bom_and_crlf_and_normalises_labels(tmp_path: Path) -> None:
    rows = "a/test,a/golden, Pass ,d00,p,b1,,,,,,,,\r\n" + "a/test,a/golden,SHORT,d01,p,b1,,,,,,,,\r\n"
    text = "\ufeff" + HEADER + "\r\n" + rows
    df = read_changenet_csv(write(tmp_path / "t.csv", text))
    assert list(df.columns) == list(CHANGENET_COLUMNS)
    assert df["label"].tolist() == ["PASS", "short"]
    assert df["input_path"].tolist() == ["a/test", "a/test"]


def test_optional_columns_padded_and_extras_kept(tmp_path: Path) -> None:
    df = read_changenet_csv(write(tmp_path / "t.csv", "input_path,golden_path,label,object_name,siamese_score\n"
                                                      "a,b,pass,o,0.3\n"))
    assert list(df.columns) == [*CHANGENET_COLUMNS, "siamese_score"]
    assert df.loc[0, "boardname"] == "" and df.loc[0, "label"] == "PASS"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("input_path,golden_path,label\na,b,PASS\n", "object_name"),
        (HEADER + "\n", "no data rows"),
        (HEADER + "\na/test,,PASS,d00,,,,,,,,,,\n", "row 2"),
        (HEADER + "\na/test,a/golden,PASS,d00,,,,,,,,,,\na/test,a/golden,,d01,,,,,,,,,,\n", "row 3"),
    ],
)
def test_bad_csv_names_file_and_problem(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(InputError) as info:
        read_changenet_csv(path)
    message = info.value.render()
    assert "bad.csv" in message and needle in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_changenet_csv(tmp_path / "nope.csv")


@pytest.mark.parametrize("value", ["../../etc", "/etc/passwd_dir", "a/../../../x"])
def test_paths_escaping_workspace_rejected(tmp_path: Path, value: str) -> None:
    ws = tmp_path / "ws"
    (ws / "kpi" / "images").mkdir(parents=True)
    df = pd.DataFrame([{"input_path": value, "golden_path": "g", "label": "PASS", "object_name": "o"}])
    with pytest.raises(InputError, match="resolves outside") as info:
        check_paths_inside(df, ws / "kpi" / "images", ws, file="train.csv")
    assert info.value.row == 2


def test_absolute_path_inside_workspace_allowed(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "kpi" / "images").mkdir(parents=True)
    df = pd.DataFrame([{"input_path": str(ws / "kpi/images/a"), "golden_path": "g", "label": "PASS",
                        "object_name": "o"}])
    check_paths_inside(df, ws / "kpi" / "images", ws, file="t.csv")


def test_image_paths_per_light_and_side() -> None:
    df = pd.DataFrame([{"input_path": "p/test", "golden_path": "p/golden", "object_name": "d00"}])
    paths = image_paths(df, "/ws/img", ["Solder", "Top"], ".jpg")
    assert set(paths["path"]) == {"/ws/img/p/test/d00_Solder.jpg", "/ws/img/p/test/d00_Top.jpg",
                                  "/ws/img/p/golden/d00_Solder.jpg", "/ws/img/p/golden/d00_Top.jpg"}


def test_rebase_to_workspace_coordinates(tmp_path: Path) -> None:
    df = pd.DataFrame([{"input_path": "p/test", "golden_path": "p/golden", "object_name": "d00"}])
    out = rebase_paths(df, tmp_path / "kpi" / "images", tmp_path)
    assert out.loc[0, "input_path"] == "kpi/images/p/test"


def test_roundtrip_and_row_model(tmp_path: Path) -> None:
    row = ChangeNetRow(input_path="a", golden_path="b", label=" Bridge ", object_name="o")
    assert row.label == "bridge"
    df = pd.DataFrame([row.model_dump()])
    write_changenet_csv(df, tmp_path / "o.csv")
    assert read_changenet_csv(tmp_path / "o.csv").equals(df.astype(str))
    with pytest.raises(ValueError):
        ChangeNetRow(input_path=" ", golden_path="b", label="PASS", object_name="o")


def test_normalise_labels_series() -> None:
    assert normalise_labels(pd.Series(["pass", "PaSs", " Open ", "MOUSEBITE"])).tolist() == [
        "PASS", "PASS", "open", "mousebite"]


def _image_ws(tmp_path: Path) -> tuple[Path, Path]:
    ws = tmp_path / "ws"
    images = ws / "kpi" / "images"
    for side in ("test", "golden"):
        (images / "p1" / side).mkdir(parents=True)
        (images / "p1" / side / "d0_L.jpg").write_bytes(b"x")
    outside = tmp_path / "outside" / "img"
    outside.mkdir(parents=True)
    (outside / "secret_L.jpg").write_bytes(b"x")
    return ws, images


def _row(**kw: str) -> pd.DataFrame:
    row = {"input_path": "p1/test", "golden_path": "p1/golden", "label": "PASS", "object_name": "d0"}
    return pd.DataFrame([{**row, **kw}])


def test_object_name_escaping_the_images_root_is_rejected(tmp_path: Path) -> None:
    ws, images = _image_ws(tmp_path)
    df = _row(object_name="../../../../../outside/img/secret")
    check_paths_inside(df, images, ws, file="t.csv")  # folders alone are fine
    with pytest.raises(InputError, match=re.escape("'object_name' = '../../../../../outside/img/secret' resolves")):
        check_paths_inside(df, images, ws, file="t.csv", lights=["L"], image_ext=".jpg")


def test_symlinked_folder_leading_out_is_rejected(tmp_path: Path) -> None:
    ws, images = _image_ws(tmp_path)
    (images / "p2").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(InputError, match="'golden_path' = 'p2/img' resolves outside") as info:
        check_paths_inside(_row(golden_path="p2/img"), images, ws, file="t.csv")
    assert info.value.row == 2


def test_symlinked_image_leading_out_is_rejected(tmp_path: Path) -> None:
    ws, images = _image_ws(tmp_path)
    target = images / "p1" / "test" / "d0_L.jpg"
    target.unlink()
    target.symlink_to(tmp_path / "outside" / "img" / "secret_L.jpg")
    with pytest.raises(InputError, match="'input_path' = 'p1/test' resolves outside"):
        check_paths_inside(_row(), images, ws, file="t.csv", lights=["L"], image_ext=".jpg")


def test_symlink_inside_the_images_root_is_fine(tmp_path: Path) -> None:
    ws, images = _image_ws(tmp_path)
    (images / "alias").symlink_to(images / "p1", target_is_directory=True)
    check_paths_inside(_row(input_path="alias/test"), images, ws, file="t.csv", lights=["L"], image_ext=".jpg")


def test_duplicated_header_is_an_error_naming_the_column(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("input_path,golden_path,label,object_name,label\na/test,a/golden,PASS,d0,open\n")
    with pytest.raises(InputError, match="named more than once in the header: label") as info:
        read_changenet_csv(csv)
    assert info.value.row == 1 and info.value.file == str(csv)


def test_missing_value_labels_are_found() -> None:
    from deft_aoi.workspace.changenet_csv import missing_value_labels

    df = pd.DataFrame({"label": ["PASS", "nan", "None", "null", "open", "NaN"]})
    assert missing_value_labels(df) == {"nan": 2, "none": 1, "null": 1}
