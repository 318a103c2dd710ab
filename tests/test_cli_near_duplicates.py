"""Issue 19: `python -m pipeline tag` lists look-alike photos before it runs, as the Tag page does (the same
sentences, pipeline/images/staging_hashes.py): inside the upload and against photos tagged before."""

from __future__ import annotations

import zipfile

from pipeline.cli import main
from test_near_duplicates import encoded, product


def test_cli_tag_prints_the_look_alikes_before_the_run(monkeypatch, tmp_path, tiny_model, capsys):
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "offline",
                       "MAX_NEW_TOKENS": "8", "CONCURRENCY": "1"}.items():
        monkeypatch.setenv(key, value)
    shirt = tmp_path / "shirt.jpg"
    shirt.write_bytes(encoded(product("shirt")))
    assert main(["tag", str(shirt), "--out", str(tmp_path / "a.csv")]) == 0
    first = capsys.readouterr().err
    assert "look" not in first  # one photo, nothing tagged before: no notice

    upload = tmp_path / "later.zip"
    with zipfile.ZipFile(upload, "w") as archive:
        archive.writestr("shirt-small.jpg", encoded(product("shirt").resize((500, 500))))
        archive.writestr("mug.jpg", encoded(product("mug")))
        archive.writestr("mug-again.jpg", encoded(product("mug", seed=4)))
    assert main(["tag", str(upload), "--out", str(tmp_path / "b.csv")]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert any(line.startswith("note: These photos look alike: later.zip:mug.jpg and later.zip:mug-again.jpg (") for line in notes), notes
    assert any(line.startswith("note: later.zip:shirt-small.jpg looks like batch 1 item 1, already tagged (") for line in notes), notes
    assert not any("mug.jpg looks like batch" in line for line in notes)  # the mug was never tagged before
    assert err.index("already tagged") < err.index("img")  # printed before the run's progress bar
