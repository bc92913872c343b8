"""Embedding a corpus larger than memory: a text file, one entry a line, streamed in chunks into a
memory-mapped ``.npy`` (row i = line i, blank lines included).

Memory holds one chunk of lines and its embeddings, whatever the corpus size. After each chunk the
rows are flushed to disk and the chunk is recorded as done in ``OUT.npy.done-RANK``, so a killed run,
started again, skips the finished chunks. ``OUT.npy.job`` says what the run does (the input file as it was,
the model, the settings, the chunking): a run started again with anything else is refused, since its rows
would mix with the first run's. Records and job go when every chunk is done.

Under ``torchrun`` (or with RANK and WORLD_SIZE set) process r of w encodes chunks r, r + w, ... into its own
rows of the same file: each chunk is batched the same way whoever encodes it, so the result is bit-identical to
one process (once the CPU kernels, which each process otherwise measures for itself, are named:
``MINIBERT_CPU_LINEAR``, ``MINIBERT_CPU_ATTENTION``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from minibert.files import done_records, job_record
from minibert.inputs import whole_number


def lines_and_digest(path: Path) -> tuple[int, str]:
    """(the lines as ``read_lines`` counts them: a final newline does not start a new, empty line; a digest of the
    file's bytes), in one pass."""
    count, last, digest = 0, b"\n", hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            count, last = count + block.count(b"\n"), block[-1:]
            digest.update(block)
    return count + (last != b"\n"), digest.hexdigest()


def chunks_of_lines(path: Path, chunk_lines: int, errors: str = "strict") -> Iterator[tuple[int, list[str]]]:
    """(chunk index, its lines), decoded line by line; an undecodable line names its number."""
    chunk, index = [], 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8", errors=errors)
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text (byte {raw[e.start]:#04x}); "
                                 "pass errors='replace' (--errors replace) to replace such bytes") from e
            chunk.append(text.rstrip("\n").removesuffix("\r"))
            if len(chunk) == chunk_lines:
                yield index, chunk
                chunk, index = [], index + 1
    if chunk:
        yield index, chunk


def done_chunks(out: Path) -> set[int]:
    done = set()
    for record in done_records(out):
        try:
            done |= {int(line) for line in record.read_text().split()}
        except ValueError as e:
            raise ValueError(f"{record}: not a record of done chunks ({e}); remove {out} and its records to "
                             "start again") from e
    return done


def environment_count(name: str, default: int) -> int:
    """An integer environment variable (torchrun's RANK, WORLD_SIZE), at least ``default``."""
    value = os.environ.get(name, str(default))
    try:
        return whole_number(name, int(value), default)
    except ValueError as e:
        raise ValueError(f"{name}={value!r}: expected an integer >= {default}") from e


def job_of(encoder, path: Path, lines: int, content: str, chunk_lines: int, errors: str,
           normalize_embeddings: bool, options: dict) -> dict:
    """What a run writes: the same for a run started again, or its rows would not be one run's. The model is its
    folder, and a digest of a sample of every weight tensor (a model built in memory has no folder; a model trained
    again in the same folder has other weights)."""
    source = encoder.tokenizer.source
    sample = torch.cat([p.detach().flatten()[:16].float().cpu() for p in encoder.parameters()])  # (every tensor's)
    weights = hashlib.blake2b(sample.numpy().tobytes(), digest_size=16).hexdigest()
    return {"input": str(path.resolve()), "input_content": content, "lines": lines, "chunk_lines": chunk_lines,
            "errors": errors, "model": None if source is None else str(Path(source).resolve()),
            "weights_sample": weights, "path": encoder.path, "dtype": str(next(encoder.parameters()).dtype),
            "normalize_embeddings": normalize_embeddings, **{k: v for k, v in sorted(options.items())}}


def job_problem(out: Path, job: dict) -> ValueError | None:
    """Why this process's run is not the run that made ``out`` (the job it recorded, key by key), or None."""
    record = job_record(out)
    before = json.loads(record.read_text()) if record.is_file() else None
    if before == job:
        return None
    changed = "no record of its job" if before is None else next(
        f"{key} was {before.get(key)!r}, now {job.get(key)!r}" for key in {**before, **job}
        if before.get(key) != job.get(key))
    return ValueError(f"{out}: started by another run ({changed}); its rows would mix with this one's: rerun as it "
                      f"ran, or remove {out.name}, {out.name}.job and {out.name}.done-* to start again")


def agree(problem: Exception | None, world: int, out: Path) -> None:
    """Every process fails where one does (the others would wait for it at the next barrier); the exchange is a
    barrier itself. (Objects, not tensors, are gathered: the group may be NCCL's, which holds no CPU tensor.)"""
    messages = [None] * world
    if world > 1:
        dist.all_gather_object(messages, None if problem is None else str(problem))
    if problem is not None:
        raise problem
    failed = next((m for m in messages if m is not None), None)
    if failed is not None:
        raise ValueError(f"{out}: another process of this run failed: {failed}")


def encode_file(encoder, path: str | Path, out: str | Path, batch_size: int = 32, chunk_lines: int = 10_000,
                errors: str = "strict", progress: bool = False, normalize_embeddings: bool = False,
                **options) -> Path:
    """Embed every line of `path` into the float32 ``.npy`` `out`; resumes a killed run of the same job.
    ``options`` go to ``encode`` (prompt_name, prompt, truncate_dim)."""
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    if out.exists() and out.samefile(path):
        raise ValueError(f"the output {out} is the input file: it would be overwritten")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the output's folder {out.parent} does not exist")
    batch_size, chunk_lines = whole_number("batch_size", batch_size), whole_number("chunk_lines", chunk_lines)
    rank, world = environment_count("RANK", 0), environment_count("WORLD_SIZE", 1)
    if rank >= world:
        raise ValueError(f"RANK {rank} is not below WORLD_SIZE {world}")
    own_group = world > 1 and not dist.is_initialized()
    if own_group:  # only to wait for each other: the rows themselves go through the file
        dist.init_process_group(backend="gloo")
    (n, content), dim = lines_and_digest(path), options.get("truncate_dim") or encoder.embedding_dim
    if n == 0:
        raise ValueError(f"{path} is empty: there is nothing to encode")
    job, problem = job_of(encoder, path, n, content, chunk_lines, errors, normalize_embeddings, options), None
    if rank == 0 and not done_chunks(out):  # a new job: make the file (a resumed one keeps its rows)
        try:
            np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, dim)).flush()
            job_record(out).write_text(json.dumps(job, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            problem = OSError(f"{out}: cannot be written ({e.strerror or e})")
    agree(problem, world, out)
    agree(job_problem(out, job), world, out)  # every process, a fresh run too: processes started by hand may differ
    rows = np.load(out, mmap_mode="r")
    if rows.shape != (n, dim) or rows.dtype != np.float32:
        raise ValueError(f"{out}: holds {rows.dtype} rows of shape {rows.shape}, but {path} needs float32 "
                         f"({n}, {dim}); remove it (and {out.name}.job, {out.name}.done-*) to start again")
    del rows
    done, total = done_chunks(out), -(-n // chunk_lines)
    mine = [c for c in range(rank, total, world) if c not in done]
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(mine) * world, desc="chunks", unit="chunk")
    with open(out.parent / f"{out.name}.done-{rank}", "a", encoding="utf-8") as record:
        for index, lines in chunks_of_lines(path, chunk_lines, errors):
            if index not in mine:
                continue
            start = index * chunk_lines
            embeddings = encoder.encode(lines, batch_size=batch_size, normalize_embeddings=normalize_embeddings,
                                        **options)
            # Mapped for this chunk only: written pages count as the process's memory while mapped.
            rows = np.load(out, mmap_mode="r+")
            rows[start:start + len(lines)] = embeddings
            rows.flush()  # the rows are on disk before the chunk is recorded as done
            del rows
            record.write(f"{index}\n")
            record.flush()
            if bar is not None:
                bar.update(world)
    if bar is not None:
        bar.close()
    if world > 1:
        dist.barrier()
    if rank == 0:  # every chunk is done: the records have served their purpose
        for record_path in [*done_records(out), job_record(out)]:
            record_path.unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
    if own_group:
        dist.destroy_process_group()
    return out
