"""`mura evaluate --by COL` refuses a column no table has before loading a model or predicting anything."""

from __future__ import annotations

from mura.cli import main


def test_an_unknown_by_column_is_refused_before_any_prediction(synthetic_mura, tmp_path, capsys) -> None:
    never_loaded = tmp_path / "not_a_checkpoint.pt"  # reaching the model would fail with "not found"
    args = ["evaluate", "--checkpoint", str(never_loaded), "--cache", str(synthetic_mura.small_cache_dir)]
    code = main([*args, "--out", str(tmp_path / "eval"), "--by", "view", "region", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "error: --by: no column 'region' in the cache's index or the index given" in err
    assert "'view'" not in err.split("(available")[0] and "view" in err.split("(available")[1]
    assert not list((tmp_path / "eval").glob("*.html"))
