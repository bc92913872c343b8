"""Encoding a text file into a memory-mapped .npy in chunks: the same rows as encoding it at once,
resumable after a kill, shardable over processes with bit-identical results, bad lines named."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from minibert.corpus import encode_file, lines_and_digest
from minibert.files import read_embeddings

LINES = ["A man is playing a guitar.", "", "Stocks fell sharply on Wednesday.", "A dog runs through the snow.",
         "The cat sat on the mat.", "   ", "Researchers published a long study on memory and sleep in adults.",
         "no", "A woman is slicing an onion.", "Markets rallied."]


class StopAfter:
    """An encoder that is killed (raises) after `n` chunks, and counts the chunks it encodes."""

    def __init__(self, encoder, n: int | None = None) -> None:
        self.encoder, self.n, self.calls = encoder, n, 0
        self.embedding_dim = encoder.embedding_dim

    def __getattr__(self, name: str):  # the model's own attributes (what the run's job records)
        return getattr(self.encoder, name)

    def encode(self, lines, **kwargs):
        if self.n is not None and self.calls == self.n:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return self.encoder.encode(lines, **kwargs)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def test_chunks_give_the_rows_of_one_pass(minilm, corpus, tmp_path):
    assert lines_and_digest(corpus)[0] == len(LINES)
    out = encode_file(minilm, corpus, tmp_path / "emb.npy", chunk_lines=3)
    rows = np.load(out)
    assert rows.shape == (10, 384) and rows.dtype == np.float32
    np.testing.assert_allclose(rows, minilm.encode(LINES), atol=1e-6)  # blank lines keep their rows
    assert not list(tmp_path.glob("emb.npy.done-*"))  # a finished job leaves no progress records


def test_a_killed_run_resumes_without_redoing_chunks(minilm, corpus, tmp_path):
    whole = np.load(encode_file(minilm, corpus, tmp_path / "whole.npy", chunk_lines=3))
    with pytest.raises(KeyboardInterrupt):
        encode_file(StopAfter(minilm, n=2), corpus, tmp_path / "emb.npy", chunk_lines=3)
    assert (tmp_path / "emb.npy.done-0").read_text().split() == ["0", "1"]
    with pytest.raises(ValueError, match="emb.npy: a `minibert encode` run that has not finished writes it"):
        read_embeddings(str(tmp_path / "emb.npy"))  # (its last rows are zeros yet)
    # started again with other settings, its rows would mix with the first run's: refused, naming what changed
    for changed, wanted in (({"chunk_lines": 2}, "chunk_lines was 3, now 2"),
                            ({"chunk_lines": 3, "prompt": "query: "}, "prompt was None, now 'query: '")):
        with pytest.raises(ValueError, match=f"emb.npy: started by another run \\({wanted}\\)"):
            encode_file(minilm, corpus, tmp_path / "emb.npy", **changed)
    os.utime(corpus)  # touched, not changed (a checkout, a copy): the run is still the same run
    again = StopAfter(minilm)
    out = encode_file(again, corpus, tmp_path / "emb.npy", chunk_lines=3)
    assert again.calls == 2  # chunks 2 and 3 only
    np.testing.assert_array_equal(np.load(out), whole)
    assert not list(tmp_path.glob("emb.npy.*"))  # no records, no job left


def test_a_run_resumes_whatever_its_name_holds_and_refuses_another_input(minilm, corpus, tmp_path):
    """An output name with glob's pattern characters finds its own records (and no other run's); an input changed
    between the two runs, with as many lines, is refused."""
    out = tmp_path / "o[1].npy"
    (tmp_path / "o1.npy.done-0").write_text("0\n1\n")  # another run's record, which a pattern would match
    with pytest.raises(KeyboardInterrupt):
        encode_file(StopAfter(minilm, n=1), corpus, out, chunk_lines=3)
    again = StopAfter(minilm)
    np.testing.assert_allclose(np.load(encode_file(again, corpus, out, chunk_lines=3)), minilm.encode(LINES),
                               atol=1e-6)
    assert again.calls == 3 and (tmp_path / "o1.npy.done-0").exists()
    with pytest.raises(KeyboardInterrupt):
        encode_file(StopAfter(minilm, n=1), corpus, tmp_path / "p.npy", chunk_lines=3)
    corpus.write_text("\n".join(LINES[::-1]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="p.npy: started by another run \\(input_content was"):
        encode_file(minilm, corpus, tmp_path / "p.npy", chunk_lines=3)


def test_two_processes_write_the_same_file_as_one(corpus, tmp_path):
    single = tmp_path / "single.npy"
    # one CPU kernel for all three processes: each would measure its own, and kernels differ by rounding
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINIBERT_CPU_LINEAR": "blas", "MINIBERT_CPU_ATTENTION": "products"}
    args = ["encode", "--input", str(corpus), "--chunk-lines", "2", "--preview", "0"]
    subprocess.run([sys.executable, "-m", "minibert", *args, "--output", str(single)], env=env, check=True,
                   capture_output=True, timeout=300)
    port = str(29600 + os.getpid() % 1000)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_addr", "127.0.0.1", "--master_port", port, "-m", "minibert", *args,
                             "--output", str(tmp_path / "sharded.npy")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "sharded.npy"), np.load(single))
    # a run started again otherwise (here: its chunking) is refused by both processes, neither left waiting
    killed = tmp_path / "killed.npy"
    np.lib.format.open_memmap(killed, mode="w+", dtype=np.float32, shape=(len(LINES), 384)).flush()
    (tmp_path / "killed.npy.done-0").write_text("0\n")
    (tmp_path / "killed.npy.job").write_text('{"chunk_lines": 5}')
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_addr", "127.0.0.1", "--master_port", str(int(port) + 1), "-m", "minibert",
                             *args, "--output", str(killed)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and result.stderr.count("killed.npy: started by another run") == 2, \
        result.stderr[-2000:]


def test_a_line_that_is_not_utf8(minilm, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nalso fine\ncaf\xe9\nlast\n")
    with pytest.raises(ValueError, match=r"bad.txt:3: not UTF-8 text \(byte 0xe9\)"):
        encode_file(minilm, path, tmp_path / "emb.npy")
    rows = np.load(encode_file(minilm, path, tmp_path / "emb2.npy", errors="replace"))
    np.testing.assert_allclose(rows[2], minilm.encode("caf\ufffd"), atol=1e-6)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        encode_file(minilm, tmp_path / "empty.txt", tmp_path / "emb3.npy")


def test_bad_settings_are_refused_before_any_file_is_written(minilm, corpus, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="the output .*corpus.txt is the input file"):
        encode_file(minilm, corpus, corpus)
    with pytest.raises(ValueError, match="chunk_lines must be an integer >= 1, got 0"):
        encode_file(minilm, corpus, tmp_path / "emb.npy", chunk_lines=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got -1"):
        encode_file(minilm, corpus, tmp_path / "emb.npy", batch_size=-1)
    monkeypatch.setenv("RANK", "abc")
    with pytest.raises(ValueError, match="RANK='abc': expected an integer >= 0"):
        encode_file(minilm, corpus, tmp_path / "emb.npy")
    assert corpus.read_text().startswith(LINES[0]) and not list(tmp_path.glob("emb.npy*"))
