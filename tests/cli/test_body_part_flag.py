"""`--body-part` is checked against the loaded model's parts: a MURA model refuses a hip in one line."""

from __future__ import annotations

import json

from PIL import Image

from mura.cli import main


def test_predict_refuses_a_part_the_model_was_not_trained_on(
    make_checkpoint, make_radiograph, tmp_path, capsys
):
    film = tmp_path / "film.png"
    Image.fromarray(make_radiograph("WRIST", abnormal=False)).save(film)
    mura7 = make_checkpoint("mura7.pt", legacy_body_parts=True)
    assert main(["predict", str(film), "-c", str(mura7), "--body-part", "hip", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().count("\n") == 0
    assert (
        "--body-part hip: not a part this model was trained on "
        "(elbow, finger, forearm, hand, humerus, shoulder, wrist)" in captured.err
    )
    assert main(["predict", str(film), "-c", str(mura7), "--body-part", "wrist", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["body_part"] == "WRIST"
