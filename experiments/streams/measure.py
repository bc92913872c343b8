"""Throughput with batches in parallel ("streams") against one batch at a time on all the threads.

`encode` runs one batch at a time, each operator spread over every thread. OpenVINO's throughput hint
instead runs several batches at once, each on fewer threads ("streams"): fewer operators wait on each other's
threads, and one batch's Python and dispatch overlap another's arithmetic. This times both ways for minibert's
fast fp32, fast bf16 and int8 paths (two Python threads, one intra-op thread each, every other batch) and for
OpenVINO in its default precision (`PERFORMANCE_HINT` LATENCY, as `make bench-rivals` runs it, and THROUGHPUT
with two streams and two requests in flight), alternating rounds in one process.

    python experiments/streams/measure.py [--rounds 5] [--threads 2]      # in .venv-bench (needs openvino)
"""

from __future__ import annotations

import statistics
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from minibert import SentenceEncoder

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_encode import cpu_name, encode_study  # noqa: E402  (scripts/, put on the path above)
from rivals import OpenVINOEncoder, onnx_folder  # noqa: E402
from timing import alternating_rounds  # noqa: E402


def in_streams(encoder: SentenceEncoder, sentences: list[str], streams: int, batch_size: int = 32) -> np.ndarray:
    """``encoder.encode(sentences)`` (unnormalised, the same batches, longest first), with the batches dealt out
    to ``streams`` Python threads of one intra-op thread each. (``torch.set_num_threads`` in a thread of its own
    sets OpenMP's and MKL's count for that thread only.)"""
    encodings = encoder.tokenizer.encode(sentences)
    order = sorted(range(len(sentences)), key=lambda i: -len(encodings[i].ids))
    batches = [order[start:start + batch_size] for start in range(0, len(sentences), batch_size)]
    out = torch.empty(len(sentences), encoder.embedding_dim)

    def work(first: int) -> None:
        torch.set_num_threads(1)
        with torch.inference_mode():
            for idx in batches[first::streams]:
                out[idx] = encoder(encoder.tokenizer.pad([encodings[i] for i in idx])).float()

    workers = [threading.Thread(target=work, args=(k,)) for k in range(streams)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return out.numpy()


class OpenVINOThroughput(OpenVINOEncoder):
    """``rivals.OpenVINOEncoder`` compiled with OpenVINO's throughput hint, ``streams`` requests in flight."""

    def __init__(self, folder: Path, threads: int, streams: int) -> None:
        import openvino

        super().__init__(folder, None, threads)
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams}
        self.model = openvino.Core().compile_model(str(folder / "onnx" / "model.onnx"), "CPU", config)
        self.streams = streams

    def encode(self, sentences: list[str], batch_size: int = 32) -> np.ndarray:
        import openvino

        order = np.argsort([-len(s) for s in sentences], kind="stable")
        out = np.empty((len(sentences), self.model.outputs[0].get_partial_shape()[-1].get_length()), np.float32)
        queue = openvino.AsyncInferQueue(self.model, self.streams)

        def done(request, batch):
            idx, mask = batch
            mean = (request.get_output_tensor(0).data * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
            out[idx] = mean / np.linalg.norm(mean, axis=1, keepdims=True)

        queue.set_callback(done)
        for start in range(0, len(sentences), batch_size):
            idx = order[start:start + batch_size]
            batch = self.tokenizer([sentences[i] for i in idx], padding=True, truncation=True, return_tensors="np")
            mask = batch["attention_mask"][..., None].astype(np.float32)
            queue.start_async({k: v for k, v in batch.items() if k in self.inputs}, (idx, mask))
        queue.wait_all()
        return out


def main() -> None:
    args, folder, sentences = encode_study(__doc__.split("\n")[0])
    reference = SentenceEncoder.from_pretrained(folder, path="reference")
    paths = {"fast fp32": reference.to_path("fast"), "fast bf16": reference.to_path("fast").in_dtype(torch.bfloat16),
             "int8": reference.to_path("int8")}
    calls = {}
    for name, encoder in paths.items():
        one_at_a_time = encoder.encode(sentences)
        parallel = in_streams(encoder, sentences, args.threads)
        gap = np.abs(one_at_a_time - parallel).max()
        print(f"{name}: streams' embeddings differ from encode's by at most {gap:.1e}")
        calls[f"minibert {name}"] = lambda e=encoder: e.encode(sentences)
        calls[f"minibert {name}, {args.threads} streams"] = lambda e=encoder: in_streams(e, sentences, args.threads)
    exported = onnx_folder(folder)
    latency, throughput = OpenVINOEncoder(exported, None, args.threads), OpenVINOThroughput(exported, args.threads, 2)
    print(f"OpenVINO: throughput hint's embeddings differ from the latency hint's by at most "
          f"{np.abs(latency.encode(sentences) - throughput.encode(sentences)).max():.1e}")
    calls[f"OpenVINO default ({latency.precision}), latency hint"] = lambda: latency.encode(sentences)
    calls[f"OpenVINO default ({latency.precision}), throughput hint, 2 streams"] = lambda: throughput.encode(sentences)
    for call in calls.values():  # warm-up: kernels measured, shapes seen
        call()
    times = alternating_rounds(calls, args.rounds)
    print(f"{cpu_name()}; torch {torch.__version__}; {len(sentences)} sentences, batch 32, {args.threads} threads, "
          f"medians of {args.rounds} alternating rounds")
    rates = {name: len(sentences) / statistics.median(seconds) for name, seconds in times.items()}
    names = list(rates)
    for i in range(0, len(names), 2):
        plain, streamed = names[i], names[i + 1]
        print(f"{plain:45s} {rates[plain]:8.1f}   {streamed:55s} {rates[streamed]:8.1f}  "
              f"({rates[streamed] / rates[plain]:.2f}x)")


if __name__ == "__main__":
    main()
